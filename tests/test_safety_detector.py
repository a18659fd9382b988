"""The crisis detector, measured as operators run it: `hearth safety scan` in a process of
its own, over the labelled messages of `tests/safety/` (precision and recall per category,
recorded), over the cases that are hardest to get right, and over input that tries to break
its one-verdict-per-line contract. Its throughput is measured in CPU time, on one core.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rooms.safety import Category, Hit, PhraseError, load_detector
from rooms.safety.phrasebook import compile_phrasebook, load_phrasebook
from tests.support.measurement import record_figure

SETS = Path(__file__).parent / "safety"
CATEGORIES = [c.value for c in Category]
NONE = "none"


def scan(data: bytes, *args: str) -> list[dict[str, object]]:
    """`hearth safety scan` over `data`: its verdicts, one per line; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "safety", "scan", *args],
        input=data, capture_output=True, timeout=120, env=os.environ,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"" or proc.stdout.endswith(b"\n")
    return [json.loads(line) for line in proc.stdout.decode().split("\n")[:-1]]


def scan_texts(texts: list[str]) -> list[str]:
    """The category each text gets from `hearth safety scan`, or "none"."""
    verdicts = scan("".join(f"{t}\n" for t in texts).encode())
    assert len(verdicts) == len(texts)
    return [str(v["category"]) if v["hit"] else NONE for v in verdicts]


def labelled(name: str) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate((SETS / name).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            label, sep, text = line.partition("\t")
            assert sep and label in [*CATEGORIES, NONE] and text.strip(), f"{name}:{number}: {line!r}"
            rows.append((label, text))
    return rows


def figures(rows: list[tuple[str, str]], got: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per category: (true positives, false positives, false negatives)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for (label, _), predicted in zip(rows, got, strict=True):
        if predicted == label:
            tp[label] += 1
            continue
        fp[predicted] += 1
        fn[label] += 1
    return {c: (tp[c], fp[c], fn[c]) for c in CATEGORIES}


def record(test: str, name: str, counts: dict[str, tuple[int, int, int]]) -> dict[str, tuple[float, float]]:
    rates = {}
    for category, (tp, fp, fn) in counts.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        record_figure(test, f"{name} {category} precision ({tp}/{tp + fp})", 100 * precision, "%")
        record_figure(test, f"{name} {category} recall ({tp}/{tp + fn})", 100 * recall, "%")
        rates[category] = (precision, recall)
    return rates


def test_the_labelled_set_meets_the_targets_in_every_category() -> None:
    """Recall >= 0.95 and precision >= 0.9 per category, on messages written as patients and
    carers write them, with at least as many hard negatives as positives."""
    rows = labelled("labelled_en.tsv")
    labels = Counter(label for label, _ in rows)
    assert len(rows) >= 300 and labels[NONE] >= sum(labels[c] for c in CATEGORIES)
    assert all(labels[c] >= 30 for c in CATEGORIES), labels
    got = scan_texts([text for _, text in rows])
    rates = record("labelled set", "labelled", figures(rows, got))
    wrong = [
        f"{label} -> {predicted}: {text}"
        for (label, text), predicted in zip(rows, got, strict=True)
        if label != predicted
    ]
    for category, (precision, recall) in rates.items():
        assert recall >= 0.95, (category, recall, wrong)
        assert precision >= 0.9, (category, precision, wrong)


def test_the_held_out_set_is_measured_and_alerts_are_rarely_wrong() -> None:
    """Messages the phrase file was never tuned on: the figures say how it does on wording it
    has not seen (recall is lower there, and recorded); a false alarm stays rare."""
    rows = labelled("heldout_en.tsv")
    rates = record("held-out set", "held-out", figures(rows, scan_texts([text for _, text in rows])))
    for category, (precision, _) in rates.items():
        assert precision >= 0.9, (category, precision)


TRICKY = [
    # idioms and everyday talk that must not alert
    ("my back is killing me", NONE),
    ("I could murder a curry", NONE),
    ("dead on my feet", NONE),
    ("this brain fog will be the death of me", NONE),
    ("killing time before the physio", NONE),
    ("I'm dying to see you", NONE),
    ("overdid it again, in bed all day", NONE),
    ("cut the onions, had to sit down", NONE),
    ("the joke killed", NONE),
    ("it hit me that she doesn't know who I am any more", NONE),
    ("I walked 2 kms today!", NONE),
    ("take 1 tablet OD", NONE),
    ("that's so odd", NONE),
    ("I'm not suicidal, just so tired", NONE),
    ("the suicide prevention charity came to the carers group", NONE),
    ("I'd rather die than do graded exercise again", NONE),
    ("I hurt myself falling over the cat", NONE),
    ("I overdid it yesterday and now I feel awful", NONE),
    # carers' and patients' everyday words that lie close to a phrase
    ("I feel the burden of caring for mum every day", NONE),
    ("I hope mum doesn't wake up tonight, I really need some sleep", NONE),
    ("my GP is gaslighting me about long covid", NONE),
    ("I have power of attorney so I control all the finances now", NONE),
    ("I took another paracetamol after lunch", NONE),
    ("I took my tablets with a drink of water", NONE),
    ("I take all my tablets together in the morning", NONE),
    ("Mum's been hiding her tablets under the cushion", NONE),
    ("I was hit by a car in 2019", NONE),
    ("I'm scared to leave mum alone", NONE),
    ("the baby kicks me all night", NONE),
    ("the app locked me out of my account again", NONE),
    ("Dad banged his head on the cupboard and it bled a bit", NONE),
    ("I cut myself a slice of cake", NONE),
    ("we said our last goodbyes to dad at the funeral", NONE),
    ("If I'm not here next week please start without me", NONE),
    ("we're all going to die one day", NONE),
    ("Mum wants to die at home, not in hospital", NONE),
    ("Dad takes his pension out every Friday", NONE),
    # the same words, meant
    ("I'd rather die than live like this", "suicide"),
    ("I want to hurt myself to feel something", "self_harm"),
    ("i overdid my meds tonight", "overdose"),
    ("he hit her again", "abuse"),
    ("my mum said she wants to end it", "suicide"),
    # spelling, spacing, leetspeak, look-alike letters, slang
    ("k i l l myself", "suicide"),
    ("KILLLLL MYSELFFFF!!!", "suicide"),
    ("k1ll mys3lf", "suicide"),
    ("su1c1de", "suicide"),
    ("s-u-i-c-i-d-e", "suicide"),
    ("suicidial", "suicide"),
    ("kіll myself", "suicide"),  # a Cyrillic і
    ("ｋｉｌｌ ｍｙｓｅｌｆ", "suicide"),  # full-width letters
    ("#killmyself", "suicide"),
    ("unalive", "suicide"),
    ("kms", "suicide"),
    ("sewer slide", "suicide"),
    ("gonna ctb", "suicide"),
    ("self-delete", "suicide"),
    ("she od'd", "overdose"),
    ("0verd0se", "overdose"),
    ("cutting again", "self_harm"),
    ("self h@rm", "self_harm"),
    ("he b3at me", "abuse"),
]


def test_tricky_cases() -> None:
    """Idioms stay quiet; the same words meant, and every disguise of them, alert."""
    got = scan_texts([text for text, _ in TRICKY])
    wrong = [(text, expected, g) for (text, expected), g in zip(TRICKY, got, strict=True) if g != expected]
    assert not wrong


def test_every_example_of_the_phrase_file_does_what_it_says() -> None:
    """Each phrase's examples hit its category; each idiom's examples alert nothing."""
    book = load_phrasebook("en")
    cases = [(x, e.category.value if e.category else NONE, e.id) for e in book.entries for x in e.examples]
    assert len(cases) > 100
    got = scan_texts([text for text, _, _ in cases])
    wrong = [(entry, text, expected, g) for (text, expected, entry), g in zip(cases, got, strict=True) if g != expected]
    assert not wrong


def test_one_verdict_per_input_line_whatever_the_line() -> None:
    """Empty and blank lines, CRLF, a lone CR, NUL, a Unicode line separator, invalid UTF-8,
    a line of 2 MB with the crisis at its very end, and a last line without a newline: one
    verdict each, in order, and nothing but `hit` and `category`."""
    long_line = b"the fog is bad today and mum is asleep " * 50_000 + b"i want to kill myself"
    lines = [
        b"",
        b"   \t ",
        b"he hit her again\r",
        b"half\rline",
        b"nul \x00 byte",
        "one\u2028line\u2029still one\x85\x0b\x0c".encode(),
        b"\xff\xfe\xc3 kill myself \xed\xa0\x80",
        b"\xc3",
        long_line,
        b"",
        b"my back is killing me",
        b"kms",
    ]
    verdicts = scan(b"\n".join(lines))  # no newline after the last line
    assert len(verdicts) == len(lines)
    assert all(set(v) == {"hit", "category"} for v in verdicts)
    assert [v["category"] for v in verdicts] == [
        None, None, "abuse", None, None, None, "suicide", None, "suicide", None, None, "suicide"
    ]  # fmt: skip
    assert scan(b"") == []
    assert scan(b"\n") == [{"hit": False, "category": None}]
    assert scan(b"\n\n\n") == [{"hit": False, "category": None}] * 3
    assert scan(b"he hit her again\n", "--phrases") == [{"hit": True, "category": "abuse", "phrase": "abuse.violence"}]


def test_an_unknown_locale_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "safety", "scan", "--locale", "xx"], input=b"kms\n", capture_output=True
    )
    assert proc.returncode == 2 and b"no phrase file for locale 'xx'" in proc.stderr and proc.stdout == b""


def test_a_hit_names_a_category_and_a_phrase_never_the_text() -> None:
    detector = load_detector("en")
    hit = detector.scan("my mum said she wants to end it")
    assert hit == Hit(Category.SUICIDE, "suicide.end_life")
    assert [f.name for f in dataclasses.fields(Hit)] == ["category", "phrase"]
    ids = {e.id for e in load_phrasebook("en").entries}
    assert hit is not None and hit.phrase in ids
    assert detector.scan("") is None and detector.scan("\x00" * 10) is None


def book(*lines: str) -> str:
    return "\n".join(['locale = "en"', 'categories = ["suicide"]', *lines])


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ('locale = "en"\ncategories = ["suicide", "grief"]', "categories must be distinct"),
        ('locale = "en"\ncategories = ["suicide"', "phrases:"),
        (book('language = "en"'), "unknown key(s) language"),
        (book("[[phrase]]", 'id = "a"', 'category = "suicide"', 'match = ["@nope"]'), "unknown list @nope"),
        (book("[[phrase]]", 'id = "a"', 'category = "abuse"', 'match = ["x"]'), "category must be one of"),
        (book("[[phrase]]", 'id = "a"', 'category = "suicide"'), "missing key(s) match"),
        (book("[[idiom]]", 'id = "a"', 'match = ["x"]', "[[idiom]]", 'id = "a"', 'match = ["y"]'), "used twice"),
        (book("[[idiom]]", 'id = "a"', 'match = ["x? ~2 y?"]'), "no word it always needs"),
        (book("[[idiom]]", 'id = "a"', 'match = ["x ~9 y"]'), "bad gap"),
        (book("[[idiom]]", 'id = "a"', 'match = ["x ~2"]'), "ends with a gap"),
        (book("[[idiom]]", 'id = "a"', 'match = ["(x (y))"]'), "parentheses"),
        (book("[[idiom]]", 'id = "a"', 'match = ["Kill"]'), "bad word 'Kill'"),
        (book("[lists]", 'l = ["@l"]', "[[idiom]]", 'id = "a"', 'match = ["@l"]'), "contains itself"),
    ],
)
def test_a_wrong_phrase_file_is_refused_saying_where(source: str, error: str) -> None:
    with pytest.raises(PhraseError, match=error.replace("(", r"\(").replace(")", r"\)")):
        compile_phrasebook(source)


def test_scan_throughput_on_one_core() -> None:
    """Lines per CPU-second of `hearth safety scan` itself (its start-up taken out), over the
    labelled messages repeated: nearly half of them alert, more work than a day's chat. The
    target is 20,000 lines/s; the assertion leaves room for a machine busy with other work."""
    texts = [text for _, text in labelled("labelled_en.tsv")]
    lines = (texts * (50_000 // len(texts) + 1))[:50_000]
    data = "".join(f"{t}\n" for t in lines).encode()

    def cpu_seconds(payload: bytes) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        verdicts = scan(payload)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert len(verdicts) == payload.count(b"\n")
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall

    start_up, start_up_wall = cpu_seconds(b"kms\n")
    total, total_wall = cpu_seconds(data)
    per_second = len(lines) / (total - start_up)
    record_figure("scan throughput", f"lines/s, CPU time, {len(lines)} lines", per_second, "lines/s")
    record_figure("scan throughput", "lines/s, wall clock", len(lines) / (total_wall - start_up_wall), "lines/s")
    record_figure("scan throughput", "start-up, CPU", 1000 * start_up, "ms")
    assert per_second >= 10_000
