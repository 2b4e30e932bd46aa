"""Synthetic EBNeRD articles: English titles that carry their category, sentiment and named entity.

`build_articles` is the one place article rows are made. `mtnews.data.synth` calls it for its own catalogue,
and `synthesize_articles` calls it for article ids collected from real behaviors/history logs, so a log
without an articles file (or one whose Danish texts you do not want) can still be trained on.

A title is "{entity} {sentiment phrase} {modifier} {category phrase}{filler}", e.g.
"Nordbank scores record win in annual quarterly earnings this week". The category phrase lists share no
words across categories and the sentiment phrase lists share none across labels, so category and sentiment
are recoverable from the words alone; the modifier, filler and entity slots carry neither and make most
titles unique. Entity types (PER, ORG, LOC, PROD, EVENT, MISC) follow a per-category mix, which makes
`entity_groups` correlated with the category as in real news.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data.schema import (
    ARTICLES,
    REFERENCES_BEHAVIORS,
    REFERENCES_HISTORY,
    REQUIRED_BEHAVIORS,
    REQUIRED_HISTORY,
    SENTIMENT_LABELS,
    aggregate,
    validate,
)
from mtnews.errors import DataError
from mtnews.io import atomic_path

# (name, EBNeRD-style category id, subcategory names, share of articles, entity-type mix, title phrases)
# Entity-type mix order: PER, ORG, LOC, PROD, EVENT, MISC.
CATEGORIES: tuple[tuple[str, int, tuple[str, ...], float, tuple[float, ...], tuple[str, ...]], ...] = (
    ("news", 118, ("crime", "courts", "accidents", "local"), 0.16, (0.35, 0.25, 0.3, 0, 0, 0.1), (
        "police investigation", "court case", "traffic accident", "house fire", "missing person search",
        "police patrol", "crime wave", "road closure", "train delays", "power outage", "rescue operation",
        "fraud trial", "bomb threat", "prison sentence", "witness appeal", "harbour blaze", "school lockdown",
        "burglary series", "ferry disruption", "water main break", "arson case", "jury verdict")),
    ("sports", 142, ("football", "handball", "cycling", "tennis"), 0.14, (0.4, 0.4, 0, 0, 0.2, 0), (
        "football derby", "league title", "transfer window", "handball final", "cycling stage", "tennis open",
        "penalty shootout", "championship race", "goalkeeper contract", "cup semifinal", "marathon course",
        "relegation battle", "coaching staff", "striker signing", "badminton tournament", "golf round",
        "swimming relay", "ski jumping", "athletics meet", "boxing bout", "squad selection", "away match")),
    ("finance", 498, ("markets", "economy", "business", "personal finance"), 0.07, (0.2, 0.7, 0.1, 0, 0, 0), (
        "stock market", "interest rates", "quarterly earnings", "housing prices", "bond yields", "pension funds",
        "inflation figures", "currency exchange", "share buyback", "annual profit", "bank lending",
        "tax revenue", "mortgage costs", "investment fund", "trade surplus", "dividend payout", "retail sales",
        "company merger", "credit rating", "consumer spending", "crypto trading", "oil prices")),
    ("politics", 457, ("parliament", "government", "elections", "foreign affairs"), 0.07, (0.6, 0.2, 0.2, 0, 0, 0), (
        "parliament vote", "coalition talks", "government budget", "election campaign", "opposition party",
        "prime minister", "foreign policy", "immigration bill", "defence spending", "cabinet reshuffle",
        "party leader", "referendum", "welfare reform", "municipal council", "ministerial resignation",
        "policy proposal", "diplomatic mission", "voter poll", "senate hearing", "EU negotiations",
        "asylum rules", "constitutional amendment")),
    ("technology", 2077, ("gadgets", "internet", "gaming", "startups"), 0.06, (0, 0.5, 0, 0.5, 0, 0), (
        "smartphone launch", "software update", "artificial intelligence", "data breach", "chip shortage",
        "cloud platform", "cyber attack", "app store", "social media platform", "startup funding",
        "quantum computer", "broadband network", "video game release", "open source project", "robotics lab",
        "password leak", "satellite internet", "semiconductor plant", "privacy settings", "coding bootcamp",
        "server outage", "wearable sensor")),
    ("health", 1165, ("medicine", "hospitals", "fitness", "nutrition"), 0.06, (0.3, 0.4, 0, 0, 0, 0.3), (
        "hospital waiting lists", "vaccine rollout", "cancer treatment", "flu season", "mental health services",
        "nurse shortage", "heart surgery", "diabetes trial", "emergency room", "medicine shortages",
        "dental care", "sleep disorders", "obesity rates", "allergy season", "covid variant", "patient safety",
        "blood donors", "fitness habits", "hearing loss", "antibiotic resistance", "maternity ward",
        "GP appointments")),
    ("travel", 25, ("holidays", "flights", "hotels", "destinations"), 0.05, (0, 0.2, 0.8, 0, 0, 0), (
        "flight cancellations", "airport queues", "holiday destinations", "hotel bookings", "cruise ship",
        "beach resort", "summer holidays", "passport rules", "rail pass", "city break", "mountain lodge",
        "camping sites", "travel insurance", "budget airline", "tourist season", "backpacking route",
        "island hopping", "hidden gems abroad", "road trip", "luggage fees", "visa requirements",
        "holiday rentals")),
    ("food", 1301, ("recipes", "restaurants", "drinks", "baking"), 0.05, (0.4, 0.3, 0.3, 0, 0, 0), (
        "restaurant review", "michelin star", "recipe ideas", "street food", "organic produce", "bakery chain",
        "wine list", "grocery bill", "vegan menu", "coffee culture", "chef competition", "food truck",
        "cheese platter", "seafood dinner", "barbecue season", "chocolate brand", "brunch spot",
        "kitchen gadgets", "fermented drinks", "dessert trend", "pizza oven", "farmers market")),
    ("entertainment", 414, ("celebrities", "tv", "royals", "shows"), 0.09, (0.6, 0.2, 0, 0, 0.2, 0), (
        "reality show", "tv series", "celebrity wedding", "talk show", "comedy special", "award show",
        "celebrity gossip", "streaming hit", "game show", "influencer feud", "red carpet", "late night host",
        "soap opera", "stage musical", "magic show", "dance contest", "podcast episode", "celebrity divorce",
        "fan convention", "paparazzi photos", "viral clip", "talent show")),
    ("music", 2342, ("pop", "rock", "classical", "concerts"), 0.05, (0.5, 0.2, 0, 0, 0.3, 0), (
        "concert tour", "new album", "festival lineup", "record label", "chart single", "rock band",
        "opera premiere", "jazz club", "music video", "guitar solo", "hip hop track", "symphony orchestra",
        "album review", "arena gig", "vinyl release", "singing contest", "pop star", "drum kit", "song lyrics",
        "acoustic session", "debut EP", "grammy nomination")),
    ("movies", 2889, ("cinema", "streaming films", "documentaries", "reviews"), 0.05, (0.5, 0.3, 0, 0, 0.2, 0), (
        "box office", "film premiere", "movie trailer", "director's cut", "cinema release", "oscar contender",
        "horror film", "sequel plans", "film festival", "animated feature", "casting call", "documentary film",
        "blockbuster budget", "superhero movie", "film score", "screenplay", "indie film", "film critics",
        "movie theatre", "remake rights", "stunt double", "period drama")),
    ("science", 5212, ("space", "nature", "research", "archaeology"), 0.04, (0.3, 0.5, 0, 0, 0, 0.2), (
        "space telescope", "fossil discovery", "particle physics", "gene editing", "mars mission",
        "ocean expedition", "dinosaur bones", "black hole", "archaeological dig", "species discovery",
        "lunar probe", "nobel prize", "lab experiment", "meteor shower", "ancient DNA", "polar ice cores",
        "comet sighting", "evolution theory", "microscope images", "volcanic activity", "rocket launch",
        "quantum physics paper")),
    ("weather", 9, ("forecast", "storms", "climate", "seasons"), 0.04, (0, 0, 0.9, 0, 0, 0.1), (
        "heat wave", "storm warning", "heavy rain", "snowfall", "flood risk", "weather forecast", "cold snap",
        "thunderstorms", "strong winds", "frost", "drought", "record temperatures", "fog", "hail",
        "sunny weekend", "autumn gales", "ice on roads", "cloudburst", "tornado sighting", "pollen count",
        "rainfall totals", "mild winter")),
    ("autos", 1094, ("cars", "electric vehicles", "traffic", "motorsport"), 0.04, (0, 0.4, 0, 0.6, 0, 0), (
        "electric car", "car sales", "fuel costs", "car recall", "driving test", "speed cameras", "hybrid model",
        "charging stations", "used car market", "motorway tolls", "car insurance", "tyre change",
        "self-driving car", "engine failure", "vintage car", "parking fines", "sports car", "crash test",
        "car dealership", "towing service", "diesel ban", "road tax")),
    ("lifestyle", 260, ("home", "fashion", "relationships", "family"), 0.03, (0.4, 0, 0, 0, 0.3, 0.3), (
        "home decor", "fashion trends", "dating tips", "wedding planning", "skincare routine", "garden design",
        "parenting advice", "yoga retreat", "minimalist living", "wardrobe essentials", "pet care",
        "interior design", "self care", "spring cleaning", "hair trends", "sustainable fashion", "family life",
        "relationship advice", "hobby crafts", "wellness trends", "tiny house", "vintage shopping")),
)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
CATEGORY_IDS = np.array([c[1] for c in CATEGORIES], dtype=np.int16)
N_CATEGORIES = len(CATEGORIES)
N_SUB = 4  # subcategories per category; their ids are SUB_BASE + 10 * category index + j
SUB_BASE = 300

ENTITY_TYPES = ("PER", "ORG", "LOC", "PROD", "EVENT", "MISC")
ENTITIES: tuple[tuple[str, ...], ...] = (
    ("Anna Jensen", "Lars Nielsen", "Sofie Hansen", "Mikkel Pedersen", "Emma Andersen", "Jonas Christensen",
     "Ida Larsen", "Frederik Sorensen", "Laura Rasmussen", "Oliver Jorgensen", "Clara Madsen",
     "Victor Kristensen", "Freja Olsen", "William Thomsen", "Alma Poulsen", "Noah Johansen", "Ella Moller",
     "Lucas Mortensen", "Maja Knudsen", "Elias Jakobsen"),
    ("Nordbank", "Baltic Shipping", "Aarhus United", "Copenhagen City FC", "Dansk Telecom", "Green Energy Group",
     "Nordlys Pharma", "Harbor Airlines", "Viking Motors", "Fjord Foods", "Central Bank", "The Ministry",
     "City Council", "Royal Theatre", "Polar Studios", "Nordic Health Authority", "Tech Nordic",
     "Aalborg Athletics", "Odense Rovers", "Skagen Records"),
    ("Copenhagen", "Aarhus", "Odense", "Aalborg", "Esbjerg", "Roskilde", "Bornholm", "Jutland", "Funen",
     "Zealand", "Skagen", "Stockholm", "Oslo", "Berlin", "Hamburg", "Greenland", "The Faroe Islands", "Malmo",
     "Helsinki", "Reykjavik"),
    ("Model Nova", "Pixel Pro X", "Volt EV", "Aurora Phone", "Nordic Sedan", "Skyline Laptop", "Hyper Console",
     "Frost Watch", "Echo Speaker", "Zen Tablet", "Falcon SUV", "Spark Scooter", "Orbit Drone", "Pulse Earbuds",
     "Glide Bike", "Atlas Router", "Nimbus Hub", "Photon Chip", "Aero Jet", "Lumen Camera"),
    ("Roskilde Festival", "Copenhagen Marathon", "Tour de Danmark", "Nordic Film Awards", "Eurovision",
     "World Cup", "Climate Summit", "Budget Talks", "Tech Expo", "Food Festival", "Jazz Week", "Winter Games",
     "Spring Election", "Harbor Regatta", "Book Fair", "Design Week", "Science Night", "Health Forum",
     "Motor Show", "Fashion Week"),
    ("Danish fans", "Nordic investors", "European leaders", "Scandinavian voters", "Olympic athletes",
     "Arctic researchers", "Baltic traders", "Christmas shoppers", "Local residents", "Young families",
     "Pensioners", "Students", "Commuters", "Tourists", "Volunteers", "Experts", "Critics", "Neighbours",
     "Farmers", "Doctors"),
)
N_ENTITIES = len(ENTITIES[0])
assert all(len(e) == N_ENTITIES for e in ENTITIES)

# One phrase list per label in SENTIMENT_LABELS order.
SENTIMENT_PHRASES: tuple[tuple[str, ...], ...] = (
    ("faces crisis over", "slumps amid", "mourns tragic", "warns of collapse in", "struggles with",
     "condemned over", "suffers setback in", "plunges after", "hit hard by", "blamed for failed",
     "fears disaster in", "loses battle over", "reels from scandal in", "cancels troubled",
     "criticised for chaotic"),
    ("reports on", "updates", "announces review of", "comments on", "publishes details of", "confirms plans for",
     "discusses", "schedules", "outlines", "responds to questions on", "presents figures on",
     "releases statement on", "prepares for", "examines", "lists changes to"),
    ("celebrates", "triumphs in", "scores record win in", "hails success of", "wins praise for", "boosts",
     "delights fans with", "soars after", "praised for brilliant", "secures victory in",
     "cheers breakthrough in", "thrives with", "unveils stunning", "lands dream deal in", "enjoys booming"),
)
SENTIMENT_SHARE = np.array([0.4, 0.3, 0.3])
MODIFIERS = ("new", "major", "latest", "local", "national", "annual", "big", "surprise", "ongoing", "first",
             "expected", "long-awaited", "upcoming", "recent", "weekend", "")
FILLERS = ("", "", "", " this week", " says report", " after talks", " on Monday", " on Tuesday", " on Friday",
           " this weekend", " according to sources", " today", " tonight", " in new statement", " this morning",
           " once again", " for the first time", " this year", " in Denmark", " late on Sunday")

PHRASES_PER_CATEGORY = min(len(c[5]) for c in CATEGORIES)
PHRASES_PER_SENTIMENT = min(len(p) for p in SENTIMENT_PHRASES)


def _pick(words: pl.Series, idx: np.ndarray) -> pl.Series:
    # Gathering in polars keeps string building in Rust: no Python str per article.
    return words.gather(pl.Series(idx, dtype=pl.UInt32))


def _category_mix(rng: np.random.Generator, n: int) -> np.ndarray:
    share = np.array([c[3] for c in CATEGORIES])
    return rng.choice(N_CATEGORIES, size=n, p=share / share.sum()).astype(np.int8)


def _entity(rng: np.random.Generator, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entity type drawn from the category's mix, then a name of that type; returns (type, flat name index)."""
    mix = np.array([c[4] for c in CATEGORIES], dtype=np.float64)
    cum = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    kind = (rng.random(len(cat))[:, None] > cum[cat]).sum(axis=1).clip(0, len(ENTITY_TYPES) - 1)
    return kind, kind * N_ENTITIES + rng.integers(0, N_ENTITIES, len(cat))


def build_articles(
    rng: np.random.Generator,
    article_ids: np.ndarray,
    published_us: np.ndarray,
    total_inviews: np.ndarray,
    total_pageviews: np.ndarray,
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Article rows in schema.ARTICLES, plus each row's category index and sentiment index (0..2)."""
    n = len(article_ids)
    cat = _category_mix(rng, n)
    sent = rng.choice(3, size=n, p=SENTIMENT_SHARE).astype(np.int8)
    kind1, ent1 = _entity(rng, cat)
    kind2, ent2 = _entity(rng, cat)
    has2 = rng.random(n) < 0.5

    cat_phrases = pl.Series([p for c in CATEGORIES for p in c[5][:PHRASES_PER_CATEGORY]])
    sent_phrases = pl.Series([p for s in SENTIMENT_PHRASES for p in s[:PHRASES_PER_SENTIMENT]])
    names = pl.Series([e for group in ENTITIES for e in group])
    types = pl.Series(ENTITY_TYPES)

    def phrase(per: int, group: np.ndarray, table: pl.Series) -> pl.Series:
        return _pick(table, group.astype(np.int64) * per + rng.integers(0, per, n))

    sub_j = rng.integers(0, N_SUB, n)
    sub_names = pl.Series([s for c in CATEGORIES for s in c[2]])
    second_sub = rng.random(n) < 0.3
    sub_j2 = (sub_j + rng.integers(1, N_SUB, n)) % N_SUB  # a different subcategory of the same category
    sub1 = SUB_BASE + 10 * cat.astype(np.int64) + sub_j
    sub2 = np.where(second_sub, SUB_BASE + 10 * cat.astype(np.int64) + sub_j2, -1)

    last_modified = published_us + np.round(rng.exponential(6.0 * 3_600, n)).astype(np.int64) * 1_000_000
    n_images = rng.choice(4, size=n, p=[0.1, 0.6, 0.2, 0.1])
    image_base = 9_000_000 + rng.integers(0, 9_000_000, n)

    df = pl.DataFrame({
        "article_id": article_ids,
        "cat": cat, "sub1": sub1, "sub2": sub2, "n_images": n_images, "image_base": image_base,
        "has2": has2,
        "e1": _pick(names, ent1), "e2": _pick(names, ent2),
        "t1": _pick(types, kind1), "t2": _pick(types, kind2),
        "verb": phrase(PHRASES_PER_SENTIMENT, sent, sent_phrases),
        "verb2": phrase(PHRASES_PER_SENTIMENT, sent, sent_phrases),
        "noun": phrase(PHRASES_PER_CATEGORY, cat, cat_phrases),
        "noun2": phrase(PHRASES_PER_CATEGORY, cat, cat_phrases),
        "mod": _pick(pl.Series(MODIFIERS), rng.integers(0, len(MODIFIERS), n)),
        "fill": _pick(pl.Series(FILLERS), rng.integers(0, len(FILLERS), n)),
        "category_str": _pick(pl.Series(CATEGORY_NAMES), cat),
        "topic": _pick(sub_names, cat.astype(np.int64) * N_SUB + sub_j),
        "published_time": pl.Series(published_us, dtype=pl.Int64).cast(pl.Datetime("us")),
        "last_modified_time": pl.Series(last_modified, dtype=pl.Int64).cast(pl.Datetime("us")),
        "premium": rng.random(n) < 0.12,
        "total_inviews": total_inviews,
        "total_pageviews": total_pageviews,
        "total_read_time": (total_pageviews * rng.lognormal(np.log(40.0), 0.5, n)).round(0),
        "sentiment_score": rng.uniform(0.5, 1.0, n),
        "sentiment_label": _pick(pl.Series(SENTIMENT_LABELS), sent),
    })
    modded = pl.when(pl.col("mod") == "").then(pl.col("noun")).otherwise(pl.concat_str("mod", "noun", separator=" "))
    title = pl.concat_str(pl.col("e1"), pl.lit(" "), pl.col("verb"), pl.lit(" "), modded, pl.col("fill"))
    second = pl.when(pl.col("has2"))
    out = df.select(
        "article_id",
        title.alias("title"),
        pl.concat_str(pl.col("e2"), pl.lit(" "), pl.col("verb2"), pl.lit(" "), pl.col("noun2"), pl.lit("."))
        .alias("subtitle"),
        "last_modified_time",
        "premium",
        pl.concat_str(title, pl.lit(". "), pl.col("e2"), pl.lit(" "), pl.col("verb2"), pl.lit(" "), pl.col("noun2"),
                      pl.lit(". Read more about "), pl.col("topic"), pl.lit(" in our "), pl.col("category_str"),
                      pl.lit(" section.")).alias("body"),
        "published_time",
        pl.int_ranges("image_base", pl.col("image_base") + pl.col("n_images")).alias("image_ids"),
        pl.lit("article_default").alias("article_type"),
        pl.concat_str(pl.lit("https://ekstrabladet.example/"), pl.col("category_str"), pl.lit("/"),
                      pl.col("article_id").cast(pl.String)).alias("url"),
        pl.concat_list("e1", second.then(pl.col("e2"))).list.drop_nulls().alias("ner_clusters"),
        pl.concat_list("t1", second.then(pl.col("t2"))).list.drop_nulls().alias("entity_groups"),
        pl.concat_list(pl.col("category_str").str.to_titlecase(), pl.col("topic")).alias("topics"),
        pl.lit(None, dtype=pl.Int16).alias("category"),  # placeholder, filled below from the code table
        pl.concat_list("sub1", pl.when(pl.col("sub2") >= 0).then(pl.col("sub2"))).list.drop_nulls()
        .alias("subcategory"),
        "category_str",
        "total_inviews",
        "total_pageviews",
        "total_read_time",
        "sentiment_score",
        "sentiment_label",
    ).with_columns(category=pl.Series(CATEGORY_IDS[cat]))
    return out.cast(ARTICLES).select(list(ARTICLES)), cat, sent


# --- articles for the ids in a real log -------------------------------------------------------------------

_SPLIT_DIRS = ("", "train", "validation", "test")


def _log_files(log_dir: Path) -> list[tuple[Path, str]]:
    if not log_dir.is_dir():
        raise DataError(f"{log_dir}: not a directory")
    found = [(log_dir / sub / f"{kind}.parquet", kind)
             for sub in _SPLIT_DIRS for kind in ("behaviors", "history")
             if (log_dir / sub / f"{kind}.parquet").exists()]
    if not found:
        raise DataError(f"{log_dir}: no behaviors.parquet or history.parquet in it or in its "
                        "train/, validation/, test/ subfolders")
    return found


def _references(path: Path, kind: str) -> pl.DataFrame:
    """One row per referenced article id in `path`: first time seen, in-view count and read count."""
    if kind == "behaviors":
        schema = validate(path, REQUIRED_BEHAVIORS, REFERENCES_BEHAVIORS)
    else:
        schema = validate(path, REQUIRED_HISTORY, REFERENCES_HISTORY)
        if "impression_time_fixed" in schema:
            _check_history_times(path)
    lf = pl.scan_parquet(path, glob=False)
    none = pl.lit(None, dtype=pl.Datetime("us"))
    parts = []
    if kind == "behaviors":
        when = pl.col("impression_time").cast(pl.Datetime("us")) if "impression_time" in schema else none
        cols = [("article_ids_inview", True), ("article_ids_clicked", False), ("article_id", False)]
        for col, inview in cols:
            if col not in schema:
                continue
            part = lf.select(pl.col(col).alias("id"), when.alias("t"), pl.lit(inview).alias("inview"))
            parts.append(part.explode("id") if isinstance(schema[col], (pl.List, pl.Array)) else part)
    else:
        ids = pl.col("article_id_fixed")
        unknown = ids.list.eval(none)  # one null time per article: the list lengths then always match
        if "impression_time_fixed" in schema:
            times = pl.col("impression_time_fixed")
            t = (pl.when(times.is_null() | ids.is_null()).then(unknown)
                 .otherwise(times.list.eval(pl.element().cast(pl.Datetime("us")))))
        else:
            t = unknown
        parts.append(lf.select(ids.alias("id"), t.alias("t")).explode("id", "t").with_columns(inview=pl.lit(False)))
    try:
        return (pl.concat([p.with_columns(pl.col("id").cast(pl.Int64)) for p in parts])
                .drop_nulls("id")
                .group_by("id")
                .agg(pl.col("t").min(), pl.col("inview").sum().alias("inviews"),
                     (~pl.col("inview")).sum().alias("reads"))
                .collect())
    except Exception as e:  # a corrupt page or mismatched list lengths surface only at collect time
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot read article references ({first})") from None


def _check_history_times(path: Path) -> None:
    """Each clicked article has its time: where both lists are there, they must be equally long."""
    times, ids = pl.col("impression_time_fixed"), pl.col("article_id_fixed")
    differ = (times.list.len() != ids.list.len()).fill_null(False)  # a null list is a row without times
    bad, first = aggregate(path, differ.sum(), pl.col("user_id").filter(differ).first())
    if bad:
        raise DataError(f"{path}: columns 'impression_time_fixed' and 'article_id_fixed' differ in length in {bad} "
                        f"row(s) (first: user_id {first}), expected one time per article")


def synthesize_articles(log_dir: str | Path, out_file: str | Path, seed: int = 0) -> int:
    """Write an articles.parquet covering every article id referenced under `log_dir`; return its row count.

    Each article is published shortly before it is first seen in the logs, and its total views are its
    counts in the logs, so time and popularity features stay consistent with the behaviors.
    """
    log_dir, out_file = Path(log_dir), Path(out_file)
    if out_file.is_dir():
        raise DataError(f"{out_file}: is a folder, expected the path of the articles.parquet to write")
    refs = pl.concat([_references(path, kind) for path, kind in _log_files(log_dir)])
    refs = (refs.group_by("id")
            .agg(pl.col("t").min(), pl.col("inviews").sum(), pl.col("reads").sum())
            .sort("id"))
    if refs.height == 0:
        raise DataError(f"{log_dir}: the behaviors/history files reference no article ids")
    if refs["id"].min() < np.iinfo(np.int32).min or refs["id"].max() > np.iinfo(np.int32).max:
        raise DataError(f"{log_dir}: article ids do not fit the EBNeRD Int32 article_id column")
    rng = np.random.default_rng([seed, 7])
    n = refs.height
    fallback = np.datetime64("2023-05-01T00:00:00", "us").astype(np.int64)
    first_seen = refs["t"].cast(pl.Int64).fill_null(fallback).to_numpy()
    lead = rng.integers(1_800, 48 * 3_600, n) * 1_000_000  # whole seconds, like the real timestamps
    articles, _, _ = build_articles(
        rng,
        refs["id"].to_numpy(),
        first_seen - lead,
        refs["inviews"].to_numpy(),
        refs["reads"].to_numpy(),
    )
    with atomic_path(out_file, suffix=".parquet") as tmp:
        articles.write_parquet(tmp)
    return n
