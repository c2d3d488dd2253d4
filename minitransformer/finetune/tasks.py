"""Fine-tuning data: the three task formats, reading them from JSON lines, and built-in tasks.

Each task is a list of examples, one JSON object per line in a ``.jsonl`` file:

    classify   {"text": "The soup was not good.", "label": "negative"}
               (optionally "text_pair": a second text, e.g. for entailment)
    tag        {"tokens": ["Maria", "paid", "42", "dollars"], "tags": ["B-PER", "O", "B-NUM", "O"]}
               one BIO tag per whitespace-free word: O, B-TYPE (an entity begins), I-TYPE (it goes on)
    seq2seq    {"input": "she bought forty two apples", "target": "she bought 42 apples"}

``read_jsonl(path, task)`` checks every line and names the file, the line and the field of
the first mistake. ``check_labels`` refuses, at evaluation, a label the model was never
trained on (the classifier has no output for it).

Built-in tasks (no download; each a pure function of its seed):

    sentiment  (classify)  review sentences whose polarity depends on negation ("not bad"),
                           embedded negation ("I would not say ... was good") and contrast
                           ("... but ..." / "although ...": the main clause decides); a
                           logistic regression on word counts scores about 55%, on word
                           pairs about 67%, against 50% for the majority label
    entities   (tag)       sentences with people, dates and numbers; words such as "May",
                           "June" or "Jordan" are a name, a month or a place by context, and a
                           four-digit number is a date after "in" and a number elsewhere
    numbers    (seq2seq)   number words to digits inside a sentence ("three hundred and
                           five" -> "305"); every other word is copied

Train and test examples are routed by a hash of their input text, so the two sides never
share an input whatever their sizes. ``pretraining_corpus`` writes unlabelled documents in
the same domains (never containing a test input) for pre-training the models that are then
fine-tuned; its reviews end, half the time, with a verdict sentence ("Overall, it was
bad."), as reviews on the web often do, which is what lets a language model answer a
sentiment prompt zero-shot.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from minitransformer.data.corpus import is_validation, json_lines

TASKS = ("classify", "tag", "seq2seq")

# field -> (type check, what to say when it fails)
FIELDS = {
    "classify": {"text": "a string", "label": "a string or an integer"},
    "tag": {"tokens": "a list of strings", "tags": "a list of BIO tags"},
    "seq2seq": {"input": "a string", "target": "a string"},
}
OPTIONAL_FIELDS = {"classify": {"text_pair": "a string"}}

TEST_FRACTION = 0.2          # share of generated inputs that belong to the test side
_SALT = "finetune-builtin"


class TaskDataError(ValueError):
    """A task file (or list of examples) does not have the fields its task needs."""


class Examples(list):
    """A list of examples that remembers where each came from (file and line), for errors."""

    def __init__(self, items=(), source: str = "", lines=None):
        super().__init__(items)
        self.source = source
        self.lines = list(lines) if lines is not None else None

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"{self.source}:{self.lines[i]}"
        return f"{self.source or 'the examples'}, example {i}"


def where(examples, i: int, source: str = "the examples") -> str:
    """How to name example ``i`` of ``examples`` in an error message."""
    return examples.where(i) if isinstance(examples, Examples) else f"{source}, example {i}"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


# =======================================================================================
# Checking examples
# =======================================================================================

def _is_tag(tag) -> bool:
    return isinstance(tag, str) and (tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2))


def check_example(example, task: str, where: str) -> dict:
    """The example with its fields checked (and a classify label as a string).

    ``where`` names the example in errors, e.g. ``data.jsonl:12``.
    """
    if not isinstance(example, dict):
        raise TaskDataError(f"{where}: expected a JSON object with fields "
                            f"{', '.join(FIELDS[task])}, got a {type(example).__name__}")
    missing = [f for f in FIELDS[task] if f not in example]
    if missing:
        raise TaskDataError(f"{where}: missing field {missing[0]!r} ({FIELDS[task][missing[0]]}); "
                            f"a {task} example needs {', '.join(map(repr, FIELDS[task]))}, this one "
                            f"has {sorted(example)}")
    out = dict(example)
    if task == "classify":
        for f in ("text", "text_pair"):
            if f in example and not isinstance(example[f], str):
                raise TaskDataError(f"{where}: field {f!r} must be a string, got "
                                    f"{type(example[f]).__name__} {example[f]!r}")
        if not example["text"].strip():
            raise TaskDataError(f"{where}: field 'text' is empty")
        label = example["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise TaskDataError(f"{where}: field 'label' must be a non-empty string or an integer, "
                                f"got {label!r}")
        out["label"] = str(label)
    elif task == "tag":
        tokens, tags = example["tokens"], example["tags"]
        for f, v in (("tokens", tokens), ("tags", tags)):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise TaskDataError(f"{where}: field {f!r} must be a list of strings, got {v!r:.80}")
        if not tokens:
            raise TaskDataError(f"{where}: field 'tokens' is empty; give at least one word")
        if len(tokens) != len(tags):
            raise TaskDataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag "
                                "per token")
        for i, w in enumerate(tokens):
            if not w or w != w.strip() or len(w.split()) != 1:
                raise TaskDataError(f"{where}: token {i} ({w!r}) must be one word without spaces; "
                                    "split it into several tokens")
        for i, t in enumerate(tags):
            if not _is_tag(t):
                raise TaskDataError(f"{where}: tag {i} ({t!r}) is not a BIO tag; use 'O', "
                                    "'B-TYPE' or 'I-TYPE' (e.g. B-PER, I-PER)")
    else:
        for f in ("input", "target"):
            if not isinstance(example[f], str):
                raise TaskDataError(f"{where}: field {f!r} must be a string, got "
                                    f"{type(example[f]).__name__} {example[f]!r}")
        if not example["input"].strip():
            raise TaskDataError(f"{where}: field 'input' is empty")
    return out


def read_jsonl(path, task: str) -> list[dict]:
    """The examples of a ``.jsonl`` task file, each checked (see ``check_example``)."""
    check_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist; give a .jsonl file with one "
                                f"{task} example per line (fields {', '.join(FIELDS[task])})")
    examples, lines = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, record in json_lines(f, path, f"a {task} task file", TaskDataError):
            examples.append(check_example(record, task, f"{path}:{lineno}"))
            lines.append(lineno)
    if not examples:
        raise TaskDataError(f"{path} holds no examples; write one JSON object per line")
    return Examples(examples, str(path), lines)


def write_jsonl(path, examples) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    return path


def label_set(examples, task: str) -> list[str]:
    """The labels a classifier for ``examples`` predicts.

    classify: the labels seen, sorted. tag: "O", then B- and I- of every entity type seen
    (both, even if the data only ever uses one), types sorted.
    """
    if task == "classify":
        return sorted({ex["label"] for ex in examples})
    if task == "tag":
        types = sorted({t[2:] for ex in examples for t in ex["tags"] if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    raise ValueError(f"task {task!r} has no label set")


def check_labels(examples, labels, task: str, source: str = "the evaluation data") -> None:
    """Refuse labels the model cannot predict, naming the first example that has one."""
    known = set(labels)
    for i, ex in enumerate(examples):
        found = [ex["label"]] if task == "classify" else ex["tags"] if task == "tag" else []
        for label in found:
            if label not in known:
                raise TaskDataError(
                    f"{where(examples, i, source)}: label {label!r} was not in the training data, so the model has no "
                    f"output for it (it knows: {', '.join(labels)}); train with examples of it or "
                    "leave those examples out")


def split_examples(examples, task: str, fraction: float = 0.1) -> tuple[list, list]:
    """(train, evaluation) by a hash of each example's input: the same input is always on the
    same side."""
    train, held = [], []
    for ex in examples:
        (held if is_validation(input_text(ex, task), fraction, _SALT) else train).append(ex)
    if not held or not train:            # tiny files: hold out the last example
        train, held = examples[:-1], examples[-1:]
    return train, held


def input_text(example: dict, task: str) -> str:
    if task == "classify":
        return example["text"] + ("\n" + example["text_pair"] if "text_pair" in example else "")
    if task == "tag":
        return " ".join(example["tokens"])
    return example["input"]


# =======================================================================================
# Built-in task: sentiment (classify)
# =======================================================================================

ASPECTS = ["food", "service", "room", "staff", "movie", "plot", "music", "price", "coffee",
           "screen", "battery", "ending", "hotel", "waiter", "book", "game", "bed", "view",
           "soup", "driver", "acting", "pasta", "camera", "lobby"]
POSITIVE = ["good", "great", "excellent", "friendly", "delicious", "clean", "fantastic", "lovely",
            "helpful", "amazing", "wonderful", "perfect", "fresh", "comfortable", "pleasant", "superb"]
NEGATIVE = ["bad", "terrible", "awful", "rude", "dirty", "boring", "cold", "slow", "horrible",
            "bland", "noisy", "broken", "disappointing", "poor", "dull", "stale"]
LIKE, DISLIKE = ["loved", "liked", "enjoyed", "adored"], ["hated", "disliked", "regretted"]
INTENSIFIERS = ["", "", "", "very ", "really ", "quite ", "so ", "truly "]
BASE_FORM = {"loved": "love", "liked": "like", "enjoyed": "enjoy", "adored": "adore",
             "hated": "hate", "disliked": "dislike", "regretted": "regret"}
# Ways to deny "the {aspect} was {adj}": the clause means the opposite of its adjective.
NEGATED = {
    "was": ["the {aspect} was not {very}{adj}", "the {aspect} wasn't {very}{adj}",
            "the {aspect} was never {adj}", "the {aspect} was not at all {adj}",
            "nothing about the {aspect} was {adj}", "I would not say the {aspect} was {adj}"],
    "is": ["the {aspect} is not {very}{adj}", "the {aspect} isn't {very}{adj}",
           "the {aspect} is never {adj}", "the {aspect} is not at all {adj}"],
    "seemed": ["the {aspect} did not seem {adj}", "the {aspect} never seemed {adj}"],
}


def _clause(rng: random.Random, polarity: int) -> str:
    """A clause about one aspect whose meaning has polarity ``polarity`` (+1 or -1).

    In 45% of clauses a negation makes the meaning the opposite of the words' own polarity
    ("the soup was not bad" is positive), so the sentiment words alone are not enough.
    """
    negate = rng.random() < 0.45
    word_polarity = -polarity if negate else polarity
    aspect = rng.choice(ASPECTS)
    if rng.random() < 0.6:                                    # "the food was (not) good"
        adj = rng.choice(POSITIVE if word_polarity > 0 else NEGATIVE)
        verb = rng.choice(["was", "is", "seemed"])
        if not negate:
            return f"the {aspect} {verb} {rng.choice(INTENSIFIERS)}{adj}"
        return rng.choice(NEGATED[verb]).format(aspect=aspect, adj=adj, very=rng.choice(INTENSIFIERS))
    verb = rng.choice(LIKE if word_polarity > 0 else DISLIKE)  # "I (did not) like the food"
    if not negate:
        return f"I {verb} the {aspect}"
    neg = rng.choice(["did not", "didn't", "never"])
    return f"I never {verb} the {aspect}" if neg == "never" else f"I {neg} {BASE_FORM[verb]} the {aspect}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _review(rng: random.Random, label: int) -> str:
    """One review sentence with overall polarity ``label``."""
    form = rng.random()
    if form < 0.5:
        return _sentence(_clause(rng, label))
    if form < 0.72:
        return _sentence(f"{_clause(rng, -label)} but {_clause(rng, label)}")
    if form < 0.84:
        return _sentence(f"although {_clause(rng, -label)}, {_clause(rng, label)}")
    return _sentence(f"{_clause(rng, label)} and {_clause(rng, label)}")


SENTIMENT_LABELS = {1: "positive", -1: "negative"}
VERDICTS = {1: "good", -1: "bad"}


def _sentiment_stream(seed: int):
    rng = random.Random(f"sentiment-{seed}")
    while True:
        label = rng.choice((1, -1))
        yield {"text": _review(rng, label), "label": SENTIMENT_LABELS[label]}, label


# =======================================================================================
# Built-in task: entities (tag)
# =======================================================================================

FIRST_NAMES = ["Maria", "John", "Aisha", "Wei", "Carlos", "Emma", "Omar", "Yuki", "Lena", "Ivan",
               "Priya", "May", "June", "April", "Grace", "Jordan", "Chelsea", "Georgia", "Sam", "Nora"]
LAST_NAMES = ["Lopez", "Smith", "Khan", "Chen", "Garcia", "Brown", "Haddad", "Tanaka", "Novak",
              "Petrov", "Patel", "Jones", "Kim", "Silva", "Jordan", "May"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
PLACES = ["Paris", "Lagos", "Lima", "Oslo", "Cairo", "Austin", "Chelsea", "Georgia", "Jordan",
          "Kyoto", "Quito", "Dublin"]
THINGS = ["books", "tickets", "boxes", "chairs", "apples", "shirts", "lamps", "bikes"]
# Templates: words, or slots in braces. The same slot twice means two independent draws.
ENTITY_TEMPLATES = [
    "{PER} paid {NUM} dollars on {DATE} .",
    "On {DATE} , {PER} sold {NUM} {THING} .",
    "{PER} was born on {DATE} in {PLACE} .",
    "{PER} and {PER} bought {NUM} {THING} for {DATE} .",
    "The meeting with {PER} moved to {DATE} .",
    "{NUM} people may visit {PLACE} in {YEAR} .",
    "{PER} may call {PER} about the {NUM} {THING} .",
    "We counted {NUM} birds near {PLACE} in {MONTH} .",
    "{PER} has lived in {PLACE} since {YEAR} .",
    "In {MONTH} , {PER} ran {NUM} miles .",
    "Please ask {PER} about the {NUM} {THING} .",
    "There is hope that {PER} will arrive on {DATE} .",
    "{PER} left {PLACE} with {NUM} {THING} in {YEAR} .",
    "Grace period ends on {DATE} for {PER} .",
]


def _number_token(rng: random.Random) -> list[str]:
    r = rng.random()
    if r < 0.5:
        return [str(rng.randint(2, 999))]
    if r < 0.65:
        return [str(rng.randint(1000, 2030))]            # looks like a year
    if r < 0.8:
        return [f"{rng.randint(1, 99)},{rng.randint(0, 999):03d}"]
    return number_words(rng.randint(2, 99), rng).split()


def _entity(rng: random.Random, slot: str) -> tuple[list[str], str | None]:
    if slot == "PER":
        first = rng.choice(FIRST_NAMES)
        words = [first] if rng.random() < 0.35 else [first, rng.choice(LAST_NAMES)]
        return words, "PER"
    if slot == "NUM":
        return _number_token(rng), "NUM"
    if slot == "YEAR":
        return [str(rng.randint(1950, 2030))], "DATE"
    if slot == "MONTH":
        return [rng.choice(MONTHS)], "DATE"
    if slot == "DATE":
        month, day, year = rng.choice(MONTHS), str(rng.randint(1, 28)), str(rng.randint(1950, 2030))
        form = rng.random()
        if form < 0.35:
            return [month, day], "DATE"
        if form < 0.65:
            return [month, day, year], "DATE"
        if form < 0.85:
            return [day, month, year], "DATE"
        return [f"{year}-{MONTHS.index(month) + 1:02d}-{int(day):02d}"], "DATE"
    if slot == "PLACE":
        return [rng.choice(PLACES)], None
    if slot == "THING":
        return [rng.choice(THINGS)], None
    raise AssertionError(slot)


def _entity_stream(seed: int):
    rng = random.Random(f"entities-{seed}")
    while True:
        tokens, tags = [], []
        for piece in rng.choice(ENTITY_TEMPLATES).split():
            if piece.startswith("{"):
                words, kind = _entity(rng, piece[1:-1])
                tokens += words
                tags += ["O"] * len(words) if kind is None else \
                    [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(piece)
                tags.append("O")
        yield {"tokens": tokens, "tags": tags}, None


# =======================================================================================
# Built-in task: numbers (seq2seq)
# =======================================================================================

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
        "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int, rng: random.Random | None = None) -> str:
    """English words for 0 <= n < 1,000,000: 342 -> 'three hundred and forty two'.

    With ``rng``, the optional parts vary as people write them: 'and' after hundred (or
    not) and a hyphen in 'forty-two' (or a space).
    """
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words: n must be in [0, 1000000), got {n}")
    flip = (lambda p: rng.random() < p) if rng is not None else (lambda p: False)

    def below_100(k):
        if k < 20:
            return ONES[k]
        return TENS[k // 10] + ("" if k % 10 == 0 else ("-" if flip(0.3) else " ") + ONES[k % 10])

    def below_1000(k):
        if k < 100:
            return below_100(k)
        head = ONES[k // 100] + " hundred"
        return head if k % 100 == 0 else head + (" " if flip(0.5) else " and ") + below_100(k % 100)

    if n < 1000:
        return below_1000(n)
    head = below_1000(n // 1000) + " thousand"
    rest = n % 1000
    if rest == 0:
        return head
    return head + (" and " if rest < 100 and not flip(0.5) else " ") + below_1000(rest)


NUMBER_TEMPLATES = [
    "she bought {} apples", "we need {} chairs for the party", "the book has {} pages",
    "add {} grams of sugar", "the train leaves in {} minutes", "there were {} people at the concert",
    "the bridge is {} meters long", "he scored {} points", "the room costs {} dollars a night",
    "they planted {} trees", "turn to page {}", "the parcel weighs {} kilograms",
    "our team won {} games", "the school has {} students", "my grandmother is {} years old",
]


def _draw_number(rng: random.Random) -> int:
    # A third below 100 (one or two words), the rest three-digit numbers, where zeros
    # ("three hundred and two" -> 302, "five hundred" -> 500) must be written that are never said.
    return rng.randint(0, 99) if rng.random() < 0.35 else rng.randint(100, 999)


def _number_stream(seed: int):
    rng = random.Random(f"numbers-{seed}")
    while True:
        template, n = rng.choice(NUMBER_TEMPLATES), _draw_number(rng)
        yield {"input": template.format(number_words(n, rng)), "target": template.format(n)}, n


# =======================================================================================
# The registry
# =======================================================================================

BUILTIN = {
    # name: (task, example stream, description)
    "sentiment": ("classify", _sentiment_stream,
                  "review sentences -> positive/negative, with negation and contrast"),
    "entities": ("tag", _entity_stream, "people, dates and numbers in sentences (BIO: PER, DATE, NUM)"),
    "numbers": ("seq2seq", _number_stream, "number words to digits inside sentences"),
}
DEFAULT_BUILTIN = {"classify": "sentiment", "tag": "entities", "seq2seq": "numbers"}


def builtin_task(name: str) -> str:
    """The task (classify, tag or seq2seq) of built-in data set ``name``."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in task {name!r}; choose one of: {', '.join(BUILTIN)}")
    return BUILTIN[name][0]


def builtin(name: str, split: str = "train", n: int = 2000, seed: int = 0) -> list[dict]:
    """``n`` examples of built-in task ``name`` from side ``split`` ("train" or "test").

    A pure function of (name, split, n, seed). No test input ever appears on the train
    side, no input twice on one side, and a classification side has as many examples of
    each label (to within one).
    """
    task = builtin_task(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    want_test = split == "test"
    out, seen, per_label = [], set(), Counter()
    quota = -(-n // 2)                 # classification sides are balanced: the baseline is 50%
    for example, _ in BUILTIN[name][1](seed):
        text = input_text(example, task)
        if is_validation(text, TEST_FRACTION, _SALT) != want_test or text in seen:
            continue
        if task == "classify":
            if per_label[example["label"]] >= quota:
                continue
            per_label[example["label"]] += 1
        seen.add(text)                 # no duplicate inputs within a side either
        out.append(example)
        if len(out) == n:
            return out
    raise AssertionError("unreachable: the streams are infinite")


def pretraining_corpus(n_docs: int = 3000, seed: int = 1) -> list[str]:
    """Unlabelled documents in the domains of the built-in tasks, for pre-training.

    Each document is a few reviews (half of them followed by a verdict sentence), a few
    sentences about people, dates and numbers, or a few sentences with numbers, written
    in words or in digits (never both for the same sentence: nothing here pairs them).
    Sentences that are test inputs of a built-in task are left out.
    """
    rng = random.Random(f"corpus-{seed}")
    streams = {name: spec[1](seed + 1000) for name, spec in BUILTIN.items()}

    def train_side(name):
        for example, extra in streams[name]:
            if not is_validation(input_text(example, BUILTIN[name][0]), TEST_FRACTION, _SALT):
                return example, extra

    docs = []
    for _ in range(n_docs):
        kind, parts = rng.random(), []
        for _ in range(rng.randint(2, 5)):
            if kind < 0.4:
                example, label = train_side("sentiment")
                parts.append(example["text"])
                if rng.random() < 0.5:
                    parts.append(f"Overall, it was {VERDICTS[label]}.")
            elif kind < 0.7:
                example, _ = train_side("entities")
                parts.append(" ".join(example["tokens"]).replace(" .", ".").replace(" ,", ","))
            else:
                example, _ = train_side("numbers")
                words = rng.random() < 0.6
                parts.append(_sentence(example["input"] if words else example["target"]))
        docs.append(" ".join(parts))
    return docs


def write_builtin(folder, n_train: int = 2000, n_test: int = 200, n_docs: int = 3000,
                  seed: int = 0) -> list[Path]:
    """Write every built-in task (train and test .jsonl) and the pre-training corpus
    (``corpus.jsonl``, one {"text": ...} per document) into ``folder``."""
    folder = Path(folder)
    written = []
    for name in BUILTIN:
        written.append(write_jsonl(folder / f"{name}.train.jsonl", builtin(name, "train", n_train, seed)))
        written.append(write_jsonl(folder / f"{name}.test.jsonl", builtin(name, "test", n_test, seed)))
    written.append(write_jsonl(folder / "corpus.jsonl",
                               [{"text": d} for d in pretraining_corpus(n_docs, seed + 1)]))
    return written
