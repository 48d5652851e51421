"""ARC (AI2 Reasoning Challenge) questions: the reader and the prompts the LLM condition uses.
Imports nothing of torch, so the CTC's parent process lists questions as it lists images.

    JSON Lines, one question a line: id, question, choices [{label, text}], answerKey
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from common.errors import InputError

LETTERS = "ABCDE"


@dataclass(frozen=True)
class Question:
    id: str
    stem: str
    labels: tuple          # as published: A–E or 1–4
    texts: tuple
    answer: str

    @property
    def answer_index(self):
        return self.labels.index(self.answer)


def parse_question(line, where="ARC"):
    """One question from its JSON line (one error line if it is not an ARC question)."""
    try:
        row = json.loads(line)
        labels = tuple(str(c["label"]) for c in row["choices"])
        texts = tuple(str(c["text"]) for c in row["choices"])
        answer = str(row["answerKey"])
        question = Question(str(row["id"]), str(row["question"]), labels, texts, answer)
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{where}: not an ARC question (id, question, choices, answerKey)") from None
    if answer not in labels:
        raise InputError(f"{where}: answerKey {answer!r} is none of the labels {labels}")
    return question


def read_arc_lines(path):
    """[(question, its JSON line)] of an ARC JSON Lines file, in file order."""
    with open(path, encoding="utf-8") as handle:
        return [(parse_question(line, f"{path}:{number}"), line.strip())
                for number, line in enumerate(handle, 1) if line.strip()]


def read_arc(path):
    """The questions of an ARC JSON Lines file."""
    return [question for question, _ in read_arc_lines(path)]


def prompt(question):
    """The question with its choices lettered A, B, … (numeric labels too: ' 1' is two tokens,
    ' A' one), one a line, then 'Answer:': the prompt of letter scoring."""
    if len(question.labels) > len(LETTERS):
        raise InputError(f"ARC question {question.id} has {len(question.labels)} choices; at most {len(LETTERS)}")
    choices = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, question.texts))
    return f"Question: {question.stem}\n{choices}\nAnswer:"


def context(question):
    """The text before each choice in log-likelihood scoring (lm-eval's ARC prompt)."""
    return f"Question: {question.stem}\nAnswer:"


def continuation(text):
    """A choice's text as it follows the context."""
    return " " + text
