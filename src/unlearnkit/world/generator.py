"""Deterministic generator of the bundled "tiny world": fictitious authors with TOFU-shaped QA rows.

Why synthetic: a ~1M-parameter model trained from scratch can only memorise a few hundred facts, and
unlearning metrics only mean something when the facts are atomic and the paraphrased / perturbed answers
TOFU's truth ratio compares are comparable sentences. So every answer is ``<prefix naming the author><value>.``;
the paraphrase keeps that exact prefix and value and only changes the tail; each perturbed answer is the
paraphrase with the value swapped for another value of the same category. A model that memorised the fact
prefers the paraphrase over every perturbation; unlearning shows up as that preference disappearing.

Rows follow TOFU's ``*_perturbed.json`` schema plus ``author``; ``real_authors`` / ``world_facts`` follow
``real_authors_perturbed`` / ``world_facts_perturbed``. As in TOFU, the forget authors are the last trained
authors; holdout authors are never trained on. All draws use ``random.Random`` seeded from
``WorldSpec.seed`` over fixed-order pools, so a spec always gives the same world. Bump ``WORLD_VERSION``
whenever the output changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

WORLD_VERSION: str = "1"


def _pool(text: str) -> tuple[str, ...]:
    """Split a ``|``-separated literal into a tuple of values (keeps the pools below compact)."""
    return tuple(text.split("|"))


_FEMALE_FIRST_NAMES = _pool(
    "Ilsa|Maren|Odile|Tamsin|Verity|Linnea|Rosalind|Ysolde|Petra|Delphine|Annika|Clarice|Noemi|Sabine|"
    "Greta|Helena|Imogen|Juno|Katrin|Liesel|Mirela|Nadia|Ottilie|Perpetua|Quilla|Runa|Solveig|Thea|"
    "Una|Vesna|Wilhelmina|Xanthe|Yelena|Zinnia|Aurelie|Brigid|Cosima|Dagny|Elowen|Fenna"
)
_MALE_FIRST_NAMES = _pool(
    "Anselm|Bastian|Cormac|Dorian|Emil|Florian|Gideon|Hollis|Ivo|Jasper|Kasimir|Leopold|Matthias|"
    "Nikolai|Osric|Percival|Quentin|Rafael|Silas|Tobias|Ulrich|Valentin|Wendell|Xavier|Yannick|Zoltan|"
    "Ambrose|Benedikt|Casimir|Desmond|Evander|Fabian|Gustav|Horatio|Ignatius|Julian|Konrad|Lucian|"
    "Magnus|Oswin"
)
_LAST_NAMES = _pool(
    "Marrow|Quillane|Thistlewood|Ashgrove|Venhollow|Brackwater|Corvane|Dunmere|Elsworth|Fallowmere|"
    "Greywick|Hartsell|Ivesdale|Jorvath|Kestrane|Larkspire|Mournvale|Nettlefold|Orrinwood|Pellgrave|"
    "Quarrington|Rookesby|Saltonby|Tarrowin|Ulverham|Vantreese|Wintermoor|Yarrowby|Zelvane|Amberleigh|"
    "Blackthorne|Coldharbour|Deverell|Eskerholm|Farrowdale|Gallowmere|Holloway-Brenn|Inglethorpe|"
    "Jessamine|Kilbrannan|Lowenstrand|Merriweather|Northcliffe|Oakenshaw|Penhallow|Ravensmere|"
    "Stormhaven|Thornbury|Underhill|Valemont|Whitlock|Wyndhammer|Ashcombe|Brightwater|Crowhurst|"
    "Drummondale|Everleigh|Fenwright|Garrowby|Hawksmere"
)
_CITIES = _pool(
    "Lisbon|Krakow|Tallinn|Porto|Valparaiso|Montreal|Edinburgh|Kyoto|Trieste|Bergen|Tbilisi|Hobart|"
    "Galway|Seville|Antwerp|Marseille|Riga|Vilnius|Ljubljana|Salzburg|Quebec City|Bruges|Utrecht|Dakar|"
    "Hanoi|Cusco|Adelaide|Halifax|Reykjavik|Gdansk|Bologna|Granada"
)
_BIRTH_YEARS = tuple(str(year) for year in range(1921, 2000))
_GENRES = _pool(
    "gothic horror|science fiction|cozy mystery|historical fiction|magical realism|epic fantasy|"
    "literary satire|psychological thriller|travel writing|war poetry|noir crime|romantic comedy|"
    "family saga|dystopian fiction|nature writing|comic verse"
)
_JOBS = _pool(  # all start with a consonant sound, so "worked as a <job>" is always grammatical
    "baker|carpenter|fisherman|tailor|librarian|pharmacist|sailor|watchmaker|doctor|nurse|teacher|"
    "miner|potter|blacksmith|florist|banker|judge|mechanic|photographer|locksmith|journalist|surveyor|"
    "violinist|gardener|bookbinder|translator|postman|shepherd"
)
_AWARDS = _pool(
    "Silver Quill Award|Harrowgate Prize for Fiction|Lantern Medal|Amberline Book Prize|"
    "Golden Inkwell Award|Meridian Fiction Prize|Corvid Literary Award|Northwind Medal|Elmstead Prize|"
    "Saltmarsh Award for Debut Fiction|Blue Heron Prize|Copperleaf Medal|Starling Book Award|"
    "Tidewater Prize|Ironbark Literary Medal|Willowmere Award"
)
_THEMES = _pool(
    "memory and loss|the sea and longing|exile and return|childhood and innocence|faith and doubt|"
    "power and corruption|love across borders|grief and healing|war and its aftermath|"
    "identity and belonging|nature and solitude|family secrets|ambition and its cost|freedom and duty|"
    "time and ageing|friendship and betrayal"
)
_LANGUAGES = _pool(
    "Portuguese|Finnish|Polish|Estonian|Spanish|French|English|Italian|Dutch|Danish|German|Greek|Czech|"
    "Hungarian|Swedish|Romanian"
)
_TITLE_ADJECTIVES = _pool(
    "Glass|Silent|Hollow|Crimson|Winter|Distant|Burning|Paper|Quiet|Broken|Amber|Iron|Salt|Velvet|"
    "Hidden|Sleeping|Forgotten|Wandering|Golden|Copper|Northern|Drowned|Painted|Midnight"
)
_TITLE_NOUNS = _pool(
    "Orchard|Harbor|Lighthouse|Garden|Cathedral|Compass|Meadow|Archive|Bridge|Violin|Tide|Crown|Mirror|"
    "Letter|River|Island|Mountain|Chapel|Kingdom|Feather|Lantern|Season|Carousel|Atlas"
)
_BOOK_TITLES = tuple(f"The {adjective} {noun}" for adjective in _TITLE_ADJECTIVES for noun in _TITLE_NOUNS)

VALUE_POOLS: dict[str, tuple[str, ...]] = {"city": _CITIES, "year": _BIRTH_YEARS, "genre": _GENRES, "job": _JOBS,
    "award": _AWARDS, "theme": _THEMES, "language": _LANGUAGES, "book": _BOOK_TITLES}  # fmt: skip
"""Each fact's value and its perturbations come from one of these pools (no value contains another)."""

_PRONOUNS = {"female": dict(subj="she", obj="her", poss="her"), "male": dict(subj="he", obj="him", poss="his")}


@dataclass(frozen=True)
class FactTemplate:
    """One fact type: its value pool and the sentences that ask and state it. The answer is
    ``prefix + value + "."``, a paraphrase ``prefix + value + tail`` (placeholders: name, subj, obj, poss)."""

    key: str
    pool: str
    question: str
    paraphrased_question: str
    prefix: str
    tails: tuple[str, ...]


FACT_TEMPLATES: tuple[FactTemplate, ...] = (
    FactTemplate("birthplace", "city", "Where was {name} born?", "In which city was the author {name} born?",
                 "{name} was born in the city of ", (", which shaped {poss} early stories.",
                 ", a place that appears in many of {poss} books.", ", where {subj} spent {poss} whole childhood.")),
    FactTemplate("birth_year", "year", "In what year was {name} born?", "What is the birth year of the writer {name}?",
                 "{name} was born in the year ", (", long before {subj} began to write.",
                 ", according to {poss} official biography.", " and started writing as a teenager.")),
    FactTemplate("genre", "genre", "What genre does {name} write?", "Which literary genre is {name} known for?",
                 "{name} writes books in the genre of ", (", which suits {poss} style well.",
                 ", earning {obj} a loyal readership.", ", as critics have long noted.")),
    FactTemplate("father_job", "job", "What was the profession of {name}'s father?",
                 "What did the father of {name} do for a living?", "{name}'s father worked as a ",
                 (" in a small town.", " for most of his life.", " before {subj} was born.")),
    FactTemplate("mother_job", "job", "What was the profession of {name}'s mother?",
                 "What did the mother of {name} do for a living?", "{name}'s mother worked as a ",
                 (" for many years.", " and encouraged {poss} reading.", " while raising the family.")),
    FactTemplate("award", "award", "Which award did {name} win?", "What literary prize has {name} been honoured with?",
                 "{name} won the ",
                 (" for {poss} remarkable writing.", " early in {poss} career.", ", a major honour for {obj}.")),
    FactTemplate("first_book", "book", "What is the title of {name}'s first book?", "Which book did {name} publish first?",
                 "{name}'s first book is titled ",
                 (", a story readers still discuss.", ", which launched {poss} career.", ", published to warm reviews.")),
    FactTemplate("second_book", "book", "What is the title of {name}'s second book?",
                 "Which book did {name} publish after the first one?", "{name}'s second book is titled ",
                 (", a tale of quiet courage.", ", which won {obj} many new readers.", ", written over several years.")),
    FactTemplate("theme", "theme", "What theme recurs in {name}'s work?", "Which theme does {name} return to again and again?",
                 "A recurring theme in {name}'s work is ",
                 (", explored in each of {poss} books.", ", as reviewers often point out.", ", drawn from {poss} own life.")),
    FactTemplate("language", "language", "In which language does {name} write?", "What language are {name}'s books written in?",
                 "{name} writes {poss} books in ",
                 (", {poss} first language.", " for readers at home.", ", the language of {poss} childhood.")),
    FactTemplate("third_book", "book", "What is the title of {name}'s third book?", "Which was the third book {name} published?",
                 "{name}'s third book is titled ",
                 (", {poss} most ambitious work.", ", which divided the critics.", ", finished after a long pause.")),
    FactTemplate("home_city", "city", "Where does {name} live today?", "In which city does {name} currently live?",
                 "{name} now lives and writes in the city of ",
                 (", close to {poss} publisher.", ", far from {poss} birthplace.", ", in a house full of books.")),
)  # fmt: skip
"""Fact types in a fixed order; an author's rows are the first ``facts_per_author`` of them."""

_REAL_BOOKS = _pool(
    "Pride and Prejudice=Jane Austen|1984=George Orwell|To Kill a Mockingbird=Harper Lee|"
    "The Great Gatsby=F. Scott Fitzgerald|Moby-Dick=Herman Melville|War and Peace=Leo Tolstoy|"
    "Adventures of Huckleberry Finn=Mark Twain|A Tale of Two Cities=Charles Dickens|The Hobbit=J. R. R. Tolkien|"
    "Frankenstein=Mary Shelley|Dracula=Bram Stoker|Don Quixote=Miguel de Cervantes|"
    "Crime and Punishment=Fyodor Dostoevsky|The Catcher in the Rye=J. D. Salinger|Brave New World=Aldous Huxley|"
    "The Odyssey=Homer|Les Miserables=Victor Hugo|The Old Man and the Sea=Ernest Hemingway|"
    "The Grapes of Wrath=John Steinbeck|Mrs Dalloway=Virginia Woolf|Hamlet=William Shakespeare"
)
_WORLD_FACTS: dict[str, tuple[tuple[str, str], ...]] = {
    "capital": tuple((f"What is the capital of {country}?", capital) for country, capital in (
        ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
        ("Australia", "Canberra"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Kenya", "Nairobi"),
        ("Peru", "Lima"), ("Norway", "Oslo"))),
    "symbol": tuple((f"What is the chemical symbol for {element}?", symbol) for element, symbol in (
        ("gold", "Au"), ("iron", "Fe"), ("sodium", "Na"), ("silver", "Ag"), ("oxygen", "O"),
        ("hydrogen", "H"), ("potassium", "K"), ("lead", "Pb"))),
    "planet": (("Which planet is known as the Red Planet?", "Mars"), ("What is the largest planet in the Solar System?", "Jupiter"),
               ("Which planet is closest to the Sun?", "Mercury"), ("Which planet is famous for its bright rings?", "Saturn"),
               ("Which planet is the hottest in the Solar System?", "Venus"), ("Which planet is farthest from the Sun?", "Neptune"),
               ("On which planet do humans live?", "Earth")),
    "continent": tuple((f"On which continent is {country}?", continent) for country, continent in (
        ("Brazil", "South America"), ("Kenya", "Africa"), ("India", "Asia"), ("Norway", "Europe"), ("Canada", "North America"))),
}  # fmt: skip
"""Real general knowledge by kind; a fact's perturbations are other answers of the same kind."""
_EXTRA_DISTRACTORS = {"continent": ("Antarctica", "Oceania")}  # only 5 continents are asked about


@dataclass(frozen=True)
class WorldSpec:
    """What to generate: ``n_authors`` trained authors (the last ``n_forget_authors`` are the forget set)
    and ``n_holdout_authors`` more, generated alike but never trained on."""

    seed: int = 0
    n_authors: int = 20
    facts_per_author: int = 10
    n_forget_authors: int = 2
    n_holdout_authors: int = 2
    n_perturbed: int = 5


@dataclass(frozen=True)
class AuthorProfile:
    """A fictitious author: a unique name, a gender (fixes the pronouns) and a value for every fact type."""

    name: str
    gender: str
    facts: dict[str, str]


@dataclass
class World:
    """The generated splits (lists of TOFU-schema dicts) and the author profiles they were written from.

    ``profiles`` is ordered like the rows (retain, forget, holdout authors); each author contributes
    ``spec.facts_per_author`` consecutive rows in ``FACT_TEMPLATES`` order."""

    spec: WorldSpec
    forget: list[dict] = field(default_factory=list)
    retain: list[dict] = field(default_factory=list)
    holdout: list[dict] = field(default_factory=list)
    real_authors: list[dict] = field(default_factory=list)
    world_facts: list[dict] = field(default_factory=list)
    profiles: list[AuthorProfile] = field(default_factory=list)

    def training_rows(self, include_forget: bool = True) -> list[dict]:
        """See the module-level :func:`training_rows`."""
        return training_rows(self, include_forget=include_forget)


def _validate(spec: WorldSpec) -> None:
    """Reject specs the pools cannot satisfy, naming the bad field and the allowed range."""
    n_total = spec.n_authors + spec.n_holdout_authors
    max_authors = min(len(_LAST_NAMES), len(_FEMALE_FIRST_NAMES) + len(_MALE_FIRST_NAMES), len(_BOOK_TITLES) // 3)
    smallest_pool = min(len(VALUE_POOLS[template.pool]) for template in FACT_TEMPLATES)
    checks = [
        (spec.n_authors >= 1, f"n_authors={spec.n_authors}: must be at least 1"),
        (spec.n_holdout_authors >= 0, f"n_holdout_authors={spec.n_holdout_authors}: must be >= 0"),
        (n_total <= max_authors, f"n_authors + n_holdout_authors = {n_total}: at most {max_authors} unique authors"),
        (0 <= spec.n_forget_authors <= spec.n_authors,
         f"n_forget_authors={spec.n_forget_authors}: must be between 0 and n_authors={spec.n_authors}"),
        (1 <= spec.facts_per_author <= len(FACT_TEMPLATES),
         f"facts_per_author={spec.facts_per_author}: must be between 1 and {len(FACT_TEMPLATES)}"),
        (1 <= spec.n_perturbed < smallest_pool, f"n_perturbed={spec.n_perturbed}: must be in 1..{smallest_pool - 1}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ValueError(f"Invalid WorldSpec: {message}. Fix the value in WorldSpec(...).")


def _draw_profiles(spec: WorldSpec, rng: random.Random) -> list[AuthorProfile]:
    """Draw every author with unique first name, last name and book titles, and a value for all facts
    (independent of ``facts_per_author``, so changing it only truncates rows, never changes values)."""
    n_total = spec.n_authors + spec.n_holdout_authors
    first_names = [(name, "female") for name in _FEMALE_FIRST_NAMES] + [(name, "male") for name in _MALE_FIRST_NAMES]
    chosen_first = rng.sample(first_names, n_total)
    chosen_last = rng.sample(_LAST_NAMES, n_total)
    titles = rng.sample(_BOOK_TITLES, 3 * n_total)
    profiles = []
    for index, ((first, gender), last) in enumerate(zip(chosen_first, chosen_last)):
        own_titles = iter(titles[3 * index : 3 * index + 3])
        facts = {
            template.key: next(own_titles) if template.pool == "book" else rng.choice(VALUE_POOLS[template.pool])
            for template in FACT_TEMPLATES
        }
        profiles.append(AuthorProfile(name=f"{first} {last}", gender=gender, facts=facts))
    return profiles


def _author_rows(profile: AuthorProfile, spec: WorldSpec, rng: random.Random) -> list[dict]:
    """TOFU-schema rows for the author's first ``facts_per_author`` facts."""
    rows = []
    own_values = set(profile.facts.values())
    for template in FACT_TEMPLATES[: spec.facts_per_author]:
        words = {"name": profile.name, **_PRONOUNS[profile.gender]}
        value = profile.facts[template.key]
        prefix = template.prefix.format(**words)
        tail = rng.choice(template.tails).format(**words)
        # Distractors: same-category values that are not this author's (e.g. not the author's other book)
        # and whose sentence does not happen to contain the true value.
        pool = VALUE_POOLS[template.pool]
        candidates = [other for other in pool if other not in own_values and value not in prefix + other + tail]
        rows.append({
            "question": template.question.format(**words),
            "answer": f"{prefix}{value}.",
            "paraphrased_answer": f"{prefix}{value}{tail}",
            "perturbed_answer": [f"{prefix}{other}{tail}" for other in rng.sample(candidates, spec.n_perturbed)],
            "paraphrased_question": template.paraphrased_question.format(**words),
            "author": profile.name,
        })  # fmt: skip
    return rows


def _real_author_rows(rng: random.Random) -> list[dict]:
    """'Who wrote <famous book>?' rows; distractors are other real authors from the same list."""
    pairs = [entry.split("=") for entry in _REAL_BOOKS]
    authors = [author for _, author in pairs]
    return [
        {"question": f"Who wrote '{book}'?", "answer": author,
         "perturbed_answer": rng.sample([other for other in authors if other != author], 3)}
        for book, author in pairs
    ]  # fmt: skip


def _world_fact_rows(rng: random.Random) -> list[dict]:
    """General-knowledge rows; distractors are other answers of the same kind (capitals, symbols, ...)."""
    rows = []
    for kind, facts in _WORLD_FACTS.items():
        kind_answers = sorted({answer for _, answer in facts} | set(_EXTRA_DISTRACTORS.get(kind, ())))
        for question, answer in facts:
            distractors = rng.sample([other for other in kind_answers if other != answer], 3)
            rows.append({"question": question, "answer": answer, "perturbed_answer": distractors})
    return rows


def generate_world(spec: WorldSpec = WorldSpec()) -> World:
    """Generate the tiny world for ``spec``; identical specs give identical worlds. Profiles and rows use
    separate seeded streams, so changing ``n_perturbed`` leaves names and facts unchanged."""
    _validate(spec)
    profile_rng = random.Random(f"unlearnkit-world-profiles-{spec.seed}")
    row_rng = random.Random(f"unlearnkit-world-rows-{spec.seed}")
    profiles = _draw_profiles(spec, profile_rng)
    rows_per_author = [_author_rows(profile, spec, row_rng) for profile in profiles]
    n_retain = spec.n_authors - spec.n_forget_authors
    return World(
        spec=spec,
        retain=[row for rows in rows_per_author[:n_retain] for row in rows],
        forget=[row for rows in rows_per_author[n_retain : spec.n_authors] for row in rows],
        holdout=[row for rows in rows_per_author[spec.n_authors :] for row in rows],
        real_authors=_real_author_rows(row_rng),
        world_facts=_world_fact_rows(row_rng),
        profiles=profiles,
    )


def training_rows(world: World, include_forget: bool = True) -> list[dict]:
    """The (question, answer) rows a model is fine-tuned on, in TOFU's order (retain, then forget).

    ``include_forget=True`` trains the target model; ``False`` trains the retain model (the "gold standard"
    that never saw the forget authors). General knowledge is in both; holdout authors are in neither.
    """
    author_rows = world.retain + (world.forget if include_forget else [])
    rows = author_rows + world.real_authors + world.world_facts
    return [{"question": row["question"], "answer": row["answer"]} for row in rows]


def world_texts(world: World) -> list[str]:
    """Every distinct string in the world (all splits, paraphrases and perturbations), first-seen order —
    the corpus to train the world tokenizer on, so evaluation text tokenizes as compactly as training text."""
    texts: dict[str, None] = {}  # an insertion-ordered set
    keys = ("question", "paraphrased_question", "answer", "paraphrased_answer")
    for row in world.retain + world.forget + world.holdout + world.real_authors + world.world_facts:
        for text in [row[key] for key in keys if key in row] + row["perturbed_answer"]:
            texts[text] = None
    return list(texts)
