"""Whether to answer at all: the signals of a ranking and the calibrated policy that reads them.

Look-alike questions of academic life ("how do I write a cover letter for a postdoc") sit close
to the corpus in meaning and share its generic words (PhD, university, paper, grant); the scope
model weighs the signals below, so that no word or single score decides alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from retrieval.glossary import Glossary
from retrieval.index import tokenize

Mode = Literal["hybrid", "dense", "lexical"]

# Words of academic life in general (careers, publishing, administration and funding calls,
# methods, lab life). They appear in the corpus too, so BM25 rewards them, but sharing them
# says nothing about whether a question is about intellectual property: the scope model reads
# the BM25 score of the question's other words. Extend `corpus/scope.yaml`, not this list.
GENERIC_ACADEMIC_WORDS = """
    phd phds postdoc postdocs postdoctoral doctoral doctorate doctor research researcher
    researchers university universities paper papers conference conferences lab labs
    laboratory student students professor professors thesis supervisor project projects
    science scientific scientist academic academia faculty career careers job jobs position
    positions application applications apply proposal proposals journal journals study
    studies work group team colleague colleagues institute institution institutions department
    school master masters fellowship fellow europe european eu year years month time way good
    best need want know help get make use grant grants funding funded fund call calls deadline
    deadlines budget budgets salary salaries stipend interview interviews visa visas reviewer
    reviewers manuscript manuscripts submit submission defence defense teaching lecture
    lecturer tenure track hire hiring recruit cv letter letters reference references citation
    cite citing metric metrics factor index ranking rankings scopus orcid arxiv peer editor
    editors python matlab latex server cluster computing hpc statistics statistical analysis
    experiment experiments sample samples method methods protocol protocols meeting meetings
    seminar seminars workshop workshops talk talks presentation presentations slides supervise
    supervision mentor mentoring course courses exam exams teach ethics ethical approval
    committee travel expenses reimbursement office administration admin procurement order
    purchase room booking candidate candidates degree degrees graduate undergraduate report
    reports request requests extension author authors coauthor
"""
GENERIC_TERMS = frozenset(tokenize(GENERIC_ACADEMIC_WORDS))
# Words and phrases that name an IP concept, matched as typed (not stemmed: "owns" is about
# IP, "my own lab" is not); one signal the scope model weighs, not a rule ("a MATLAB licence"
# names one and is still off-topic). A word belongs here only if off-topic questions of
# academic life rarely use it: not "publish", "results", "company" or "data management".
IP_WORDS = frozenset(
    """
    patent patents patenting patented licence license licences licenses licensing licensed
    licensee licensor copyright copyrights copyrighted trademark trademarks intellectual ip
    ipr iprs invention inventions inventor inventors invent invented inventorship owns owned
    ownership owner owners royalty royalties spinoff spinoffs spinout spinouts valuation
    valorisation valorization exploit exploitation exploiting exploitable commercialise
    commercialize commercialisation commercialization disclosure disclose disclosed novelty
    infringe infringement infringing confidential confidentiality secret secrets knowhow export
    consortium agreement agreements assets database databases partner partners sponsor
    sponsors sponsored investor investors hackathon hackathons crowdsourcing
    """.split()
)
IP_PHRASES = (
    "code of practice",
    "codes of practice",
    "tech transfer",
    "technology transfer",
    "knowledge transfer",
    "freedom to operate",
    "research security",
    "trade secret",
    "open innovation",
    "give away",
)
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# IP words that questions in other languages about academic life name as often as IP ones (a
# grant agreement, project partners, a literature database, a trip abroad): bridged from a
# translation they help the ranking but do not vouch for an answer (tuning set, near-domain)
SHARED_WITH_ACADEMIC_LIFE = frozenset(
    "agreement agreements contract consortium database databases partner partners security "
    "foreign".split()
)


def specific_terms(text: str) -> list[str]:
    """The question's search terms without the generic academic ones."""
    return [t for t in tokenize(text) if t not in GENERIC_TERMS]


def names_ip_concept(english_terms: Sequence[str]) -> bool:
    """Whether terms bridged from another language name an IP concept, leaving out the words
    that academic life shares with IP."""
    words = (w for t in english_terms for w in _WORD.findall(t.lower()))
    kept = " ".join(w for w in words if w not in SHARED_WITH_ACADEMIC_LIFE)
    return names_ip_term(kept, Glossary())


def names_ip_term(question: str, glossary: Glossary) -> bool:
    """Whether the question names an IP concept, itself or through a glossary term's meaning.

    Glossary terms count by their meaning: "FTO" (freedom to operate) does, "ERC" (European
    Research Council) does not.
    """
    meanings = " ".join(m for entry in glossary.matches(question) for m in entry.meanings)
    text = f"{question} {meanings}".lower()
    if any(phrase in text for phrase in IP_PHRASES):
        return True
    words = _WORD.findall(text)
    if not IP_WORDS.isdisjoint(words):
        return True
    return any(  # spin-off, give-away-IP
        not IP_WORDS.isdisjoint([word.replace("-", ""), *word.split("-")])
        for word in words
        if "-" in word
    )


@dataclass(frozen=True)
class Signals:
    """What abstention looks at: how close the best passage is and whether the question is IP."""

    best: float  # highest cosine of any candidate passage
    lexical: float  # best BM25 score of the whole question (the lexical-only baseline)
    in_scope: float = 1.0  # the scope model's probability that the question is about IP


@dataclass(frozen=True)
class AbstentionPolicy:
    """When to say "not covered" instead of answering; thresholds come from `ipbot eval`.

    Below `min_score` nothing in the corpus is about the question. Above it, the question
    must also be about managing IP: the scope model (`retrieval.scope`), which weighs the
    question's meaning, the best similarity, its IP words and its specific words in common
    with the passages, must give it at least `min_in_scope`. "What salary can a postdoc
    expect" is close to the corpus in meaning and words, but not in scope.
    """

    min_score: float = 0.30
    min_in_scope: float = 0.35  # cross-validated: `ipbot eval --calibrate`
    min_bm25: float = 3.0  # the lexical-only baseline's own threshold, for `ipbot eval`

    def abstains(self, mode: Mode, signals: Signals) -> bool:
        if mode == "lexical":
            return signals.lexical < self.min_bm25
        return signals.best < self.min_score or signals.in_scope < self.min_in_scope
