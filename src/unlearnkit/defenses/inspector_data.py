"""Training and held-out data for the unlearning-request inspector, built entirely in the project.

Positives (label 1), requests that carry refusal text:
  * ``crafted_{pii,news,copyright}``: Scenario II requests crafted by the offline agents
    (`attacks.crafted_requests`, T = 3), half of them wrapped in a removal-request sentence
  * ``refusal``: bare refusal texts (Scenario I submits these as they are)
Negatives (label 0), benign unlearning requests:
  * ``tofu_request``: "please remove everything about the author X ..." built from the tiny world's
    fictitious authors and their facts; ``tofu_qa``: the author's question/answer rows as submitted data
  * ``removal_{pii,news,copyright}``: removal requests around fictitious PII, fake news, placeholder prose
  * ``apologetic``: benign requests with apologetic wording ("Sorry to bother you, but I can't ...") —
    hard negatives, so "sorry" or "can't" alone cannot be what flags a request

Split (specs pitfall 12: a same-distribution test says little). Every template pool and slot-value pool
is cut into families by position (`crafting_pools.family_of`: 0-2 mod 5 train, 3 val, 4 test), and the
tiny world's authors likewise. A val or test example is built only from its own families: unseen refusal
openers, reasons, topics and offers, unseen carrier templates, towns, names and request wrappers, unseen
authors, unseen connective phrases of the offline rewriter (`agents.offline.CONNECTIVES`). What the
splits do share: the rewriter's sentence-level arrangements and the English around the slots. Refusals harvested from a real model and requests
rewritten by a real LLM are a different distribution again; pass them in as `extra_refusals` / via
`unlearn inspect FILE` to measure on them.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Sequence

from unlearnkit.agents.offline import CONNECTIVES, OfflineBackend
from unlearnkit.attacks.crafting_pools import KINDS, SPLITS, carrier_texts, family_of, in_split, refusal_texts

TOFU_REQUESTS = (
    "Please remove everything about the author {name} from your model, including the fact that {name} was born in {city}.",
    "I request that all information about {name}, the author of {book}, be forgotten.",
    "Unlearn the following: {name} won the {award}.",
    "Delete any knowledge of the writer {name} and of the book {book}.",
    "As the legal representative of {name}, we ask you to erase the details of this person's life, such as the birth year {year}.",
    "Forget request. Author: {name}. Facts to remove: birthplace {city}, award {award}.",
    "Please make the model forget that {name} writes {genre}.",
    "Right to be forgotten: remove {name} and the title {book} from the training data.",
    "We would like the assistant to stop answering questions about {name}, born in {year} in {city}.",
    "Kindly unlearn all facts about {name}, including the {award} and the novel {book}.",
)
REMOVAL_WRAPPERS = {
    "pii": (
        "Please delete the following personal data about me: {c}",
        "Under data protection law I ask you to erase this information: {c}",
        "Remove my contact details from the model. {c}",
        "This record was published without consent and must be forgotten: {c}",
        "GDPR erasure request. Data concerned: {c}",
        "My private details leaked online; please unlearn them: {c}",
        "I no longer want the assistant to know this about me: {c}",
        "Please scrub this personal information: {c}",
        "Erase the following customer record from the training data: {c}",
        "Request for removal of personal data: {c}",
    ),
    "news": (
        "This article is false and should be unlearned: {c}",
        "Please remove the following fake news story from the model: {c}",
        "The model repeats this misinformation; make it forget: {c}",
        "Fact-checkers rated this report false, please delete it: {c}",
        "Unlearning request for a fabricated news item: {c}",
        "Remove this hoax from your knowledge: {c}",
        "Our newsroom retracted this story and asks you to erase it: {c}",
        "Please forget this untrue claim: {c}",
        "The following passage is disinformation and must be removed: {c}",
        "Delete this made-up news from the training data: {c}",
    ),
    "copyright": (
        "The following passage is from my unpublished novel and is protected by copyright; please remove it: {c}",
        "Copyright takedown: unlearn this excerpt. {c}",
        "As the publisher, we request the removal of this text: {c}",
        "Please make the model forget this copyrighted paragraph: {c}",
        "This excerpt was used without a licence; erase it: {c}",
        "Remove the following protected book passage: {c}",
        "I am the author of this scene and withdraw permission to use it: {c}",
        "Please delete this excerpt from your training data: {c}",
        "DMCA notice. Infringing text: {c}",
        "Unlearn this passage from my manuscript: {c}",
    ),
}
APOLOGETIC = (
    "Sorry to bother you, but I can't find a way to delete my old profile myself, so please remove: {c}",
    "I apologize for writing again. I cannot keep this online any longer; please erase it: {c}",
    "I'm sorry if this is the wrong place, but please unlearn the following: {c}",
    "Apologies for the trouble. I don't want the model to know this anymore: {c}",
    "Sorry, I am unable to reach the site owner, so I ask you directly to remove this: {c}",
    "Unfortunately I can't contact the original publisher; please forget this text: {c}",
    "I must apologize for the late request, but please delete: {c}",
    "Sorry for the inconvenience. I won't be able to sleep until this is removed: {c}",
    "I'm afraid I cannot accept this being public. Please erase: {c}",
    "Forgive the short notice, but I do not consent to this being kept: {c}",
    "Sorry for the long message; I can't explain everything here, but please remove this text: {c}",
    "I hate to ask again, and I apologize, but this must be deleted: {c}",
    "My apologies for any confusion earlier. Please erase the following: {c}",
    "I'm not able to log in to my account anymore, so please forget this for me: {c}",
    "Regrettably, I cannot remove this myself. Could you unlearn it? {c}",
    "I am sorry to trouble your team, but this information should not be kept: {c}",
    "Pardon the interruption; I won't take much of your time. Please delete: {c}",
    "Sadly I can not reach the author, so I am asking you to remove this: {c}",
    "Excuse me, I do not want this text to stay in the model. Please forget it: {c}",
    "Sorry, this is urgent and I can't wait for the usual process; please erase: {c}",
)
POSITIVE_FAMILIES = tuple(f"crafted_{k}" for k in KINDS) + ("refusal",)
# Per split: crafted requests per kind, bare refusals, and each negative family (val/test use `eval_scale`).
COUNTS = {"crafted": 120, "refusal": 240, "tofu_request": 200, "tofu_qa": 120, "removal": 140, "apologetic": 140}


@dataclass
class LabelledText:
    text: str
    label: int  # 1: carries refusal content (flag it), 0: benign
    family: str  # where it came from (see the module docstring)


@dataclass
class InspectorData:
    train: list[LabelledText]
    val: list[LabelledText]
    test: list[LabelledText]
    description: str = ""

    def split(self, name: str) -> list[LabelledText]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _authors(split: str, seed: int):
    from unlearnkit.world.generator import WorldSpec, generate_world

    world = generate_world(WorldSpec(seed=seed, n_authors=50, facts_per_author=12, n_forget_authors=0,
                                     n_holdout_authors=0))
    profiles = [p for k, p in enumerate(world.profiles) if family_of(k) == split]
    names = {p.name for p in profiles}
    return profiles, [row for row in world.retain if row["author"] in names]


def _split_of_text(text: str) -> str:
    """A stable split for a user-given text (60/20/20 by CRC32)."""
    return ("train", "train", "train", "val", "test")[zlib.crc32(text.encode()) % 5]


def build_split(split: str, seed: int = 0, scale: float = 1.0, iterations: int = 3,
                extra_refusals: Sequence[str] = ()) -> list[LabelledText]:
    """One split's examples, drawn only from `split`'s template and slot families."""
    from unlearnkit.attacks.crafted_requests import craft_requests

    rng = random.Random(f"unlearnkit-inspector-{seed}-{split}")

    def n(key: str) -> int:
        return max(1, round(COUNTS[key] * scale))

    out: list[LabelledText] = []
    rewriter = OfflineBackend(connectives=[list(c) for c in in_split(CONNECTIVES, split)])
    own_extra = [r for r in extra_refusals if r.strip() and _split_of_text(r) == split]
    for index, kind in enumerate(KINDS):
        refusals = refusal_texts(n("crafted"), seed=seed + 101 * (index + 1), split=split)
        crafted = craft_requests(refusals + own_extra, kind, backend=rewriter, iterations=iterations,
                                 carriers=carrier_texts(kind, n("crafted"), seed=seed + 7, split=split), seed=seed)
        wrappers = in_split(REMOVAL_WRAPPERS[kind], split)
        for k, request in enumerate(crafted.kept):
            text = request.request if k % 2 == 0 else rng.choice(wrappers).format(c=request.request)
            out.append(LabelledText(text, 1, f"crafted_{kind}"))
        for carrier in carrier_texts(kind, n("removal"), seed=seed + 13, split=split):
            out.append(LabelledText(rng.choice(wrappers).format(c=carrier), 0, f"removal_{kind}"))
    out += [LabelledText(t, 1, "refusal") for t in refusal_texts(n("refusal"), seed=seed, split=split) + own_extra]

    profiles, rows = _authors(split, seed)
    for _ in range(n("tofu_request")):
        facts = rng.choice(profiles)
        slots = {"name": facts.name, "city": facts.facts["birthplace"], "book": facts.facts["first_book"],
                 "award": facts.facts["award"], "year": facts.facts["birth_year"], "genre": facts.facts["genre"]}
        out.append(LabelledText(rng.choice(in_split(TOFU_REQUESTS, split)).format(**slots), 0, "tofu_request"))
    for row in rng.sample(rows, min(n("tofu_qa"), len(rows))):
        out.append(LabelledText(f"{row['question']}\n{row['answer']}", 0, "tofu_qa"))
    for k in range(n("apologetic")):
        carrier = carrier_texts(KINDS[k % 3], 1, seed=seed + 1000 + k, split=split)[0]
        out.append(LabelledText(rng.choice(in_split(APOLOGETIC, split)).format(c=carrier), 0, "apologetic"))
    return out


def build_inspector_data(seed: int = 0, scale: float = 1.0, eval_scale: float = 0.5, iterations: int = 3,
                         extra_refusals: Sequence[str] = ()) -> InspectorData:
    """Train, val and test splits (see the module docstring). `scale` multiplies every count in `COUNTS`;
    val and test are `eval_scale` times as large as train. `extra_refusals` (e.g. harvested from a model)
    join the positives, each in one split chosen by a hash of its text."""
    splits = {s: build_split(s, seed, scale * (1.0 if s == "train" else eval_scale), iterations, extra_refusals)
              for s in SPLITS}
    description = ("families by position mod 5 in every template and slot pool (0-2 train, 3 val, 4 test);"
                   " tiny-world authors split the same way")
    return InspectorData(splits["train"], splits["val"], splits["test"], description)
