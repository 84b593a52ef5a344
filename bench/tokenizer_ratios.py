"""How far the raw estimator (cl100k_base) is from real tokenizers, per script: the data
behind ``proxy.context.correction.PRIORS`` (results: docs/context-counting.md).

Reproduce (the tokenizer files come from registry packages, nothing from a model hub)::

    pip download mistral-common --no-deps -d tok && unzip tok/*.whl -d tok
    npm pack @anthropic-ai/tokenizer llama-tokenizer-js   # then untar both
    pip install sentencepiece            # in a scratch venv
    python bench/tokenizer_ratios.py \\
        --claude package/claude.json \\
        --tekken tok/mistral_common/data/tekken_240911.json \\
        --sentencepiece tok/mistral_common/data/tokenizer.model.v1 \\
        --llama-js llama-tokenizer-js/llama-tokenizer.js \\
        --mo-dir /usr/share/locale

Every tokenizer option is optional (o200k_base always runs). ``--mo-dir`` adds real UI
translations (gettext catalogs) for ko, ja, zh_CN, ru, de, fr, ar, hi, uk, el, th, vi, he to
the built-in corpus. Prints min-max (mean) of tokenizer / cl100k per language. Numbers only.
"""

from __future__ import annotations

import argparse
import base64
import gettext
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import tiktoken

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.context.bpe import get_encoding
from proxy.context.corpus import LANGUAGES
from proxy.context.corpus import text as corpus_text

Counter = Callable[[list[str]], list[int]]
MO_LANGS = ("ko", "ja", "zh_CN", "ru", "de", "fr", "ar", "hi", "uk", "el", "th", "vi", "he")


def tiktoken_counter(enc: tiktoken.Encoding) -> Counter:
    return lambda texts: [len(enc.encode_ordinary(t)) for t in texts]


def claude(path: str) -> Counter:
    """js-tiktoken's compact ranks: per line ``<skip> <offset> <b64 token>...``."""
    data = json.loads(Path(path).read_text())
    ranks: dict[bytes, int] = {}
    for line in data["bpe_ranks"].split("\n"):
        if line:
            _, offset, *tokens = line.split(" ")
            ranks.update({base64.b64decode(t): int(offset) + i for i, t in enumerate(tokens)})
    enc = tiktoken.Encoding(
        "claude",
        pat_str=data["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=data["special_tokens"],
    )
    return tiktoken_counter(enc)


def tekken(path: str) -> Counter:
    data = json.loads(Path(path).read_text())
    config = data["config"]
    n = config["default_vocab_size"] - config["default_num_special_tokens"]
    ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in data["vocab"][:n]}
    return tiktoken_counter(
        tiktoken.Encoding(
            "tekken", pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={}
        )
    )


def sentencepiece(path: str) -> Counter:
    import sentencepiece as spm  # optional, measurement only

    model = spm.SentencePieceProcessor(model_file=path)
    return lambda texts: [len(model.encode(t)) for t in texts]


def llama_js(path: str) -> Counter:
    """LLaMA-1/2 (SentencePiece BPE, byte fallback) through llama-tokenizer-js under node."""

    def count(texts: list[str]) -> list[int]:
        with tempfile.TemporaryDirectory() as tmp:
            module = Path(tmp) / "llama.mjs"
            module.write_text(Path(path).read_text())
            (Path(tmp) / "in.json").write_text(json.dumps(texts))
            script = (
                "import t from './llama.mjs'; import fs from 'fs';"
                "const x = JSON.parse(fs.readFileSync('in.json','utf8'));"
                "console.log(JSON.stringify(x.map(s => t.encode(s, false, false, false).length)));"
            )
            out = subprocess.run(
                ["node", "--input-type=module", "-e", script],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=True,
            )
            return list(json.loads(out.stdout))

    return count


def corpus(mo_dir: str | None) -> dict[str, list[str]]:
    texts = {
        lang: [corpus_text(lang, random.Random(s), 12) for s in range(20)] for lang in LANGUAGES
    }
    for lang in MO_LANGS if mo_dir else ():
        found: list[str] = []
        for path in sorted(Path(mo_dir or "").glob(f"{lang}/LC_MESSAGES/*.mo")):
            try:
                with path.open("rb") as fh:
                    catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError):  # a catalog in a legacy charset
                continue
            found += [v for v in catalog.values() if isinstance(v, str) and len(v) > 20]
        random.Random(1).shuffle(found)
        chunks = ["\n".join(found[i : i + 40]) for i in range(0, len(found) - 40, 40)][:60]
        if chunks:
            texts[f"mo:{lang}"] = chunks
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--claude", "--tekken", "--sentencepiece", "--llama-js", "--mo-dir"):
        parser.add_argument(flag)
    args = parser.parse_args(argv)
    counters: dict[str, Counter] = {"o200k": tiktoken_counter(get_encoding("o200k_base"))}
    for name, build in (
        ("claude2", claude),
        ("tekken", tekken),
        ("sentencepiece", sentencepiece),
        ("llama2", llama_js),
    ):
        path = getattr(
            args,
            name
            if name not in ("claude2", "llama2")
            else {"claude2": "claude", "llama2": "llama_js"}[name],
        )
        if path:
            counters[name] = build(path)
    base = tiktoken_counter(get_encoding("cl100k_base"))
    print("| language | " + " | ".join(counters) + " |")
    print("|---" * (len(counters) + 1) + "|")
    for lang, texts in corpus(args.mo_dir).items():
        raw = base(texts)
        cells = []
        for count in counters.values():
            ratios = [n / r for n, r in zip(count(texts), raw, strict=True) if r]
            cells.append(f"{min(ratios):.2f}-{max(ratios):.2f} ({sum(ratios) / len(ratios):.2f})")
        print(f"| {lang} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
