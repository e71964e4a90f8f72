"""Test KBs of shapes the dev sets lack, made here (fictional entities, no data set's names or wordings):

- `workshop`: English tools whose names run from 10 to 80 characters, most long ones containing another
  entity's shorter name ("Harbor Lantern" / "Harbor Lantern with Brass Hood and Storm Glass"), with
  hyphenated spellings a user may type with a space ("Heavy-Duty" / "heavy duty");
- `gadgets`: a Chinese KB of products with Latin-script model names ("Zephyr X1 Carbon Gen 12"), asked in
  Chinese with or without a space before the question;
- `towns`: invented Chinese towns with a country (the city category's overview), population, time zone,
  other names and coordinates, asked about as a whole in wordings no list or overview form holds;
- `poems` (Chinese) and `trails` (English): attributes whose values have a recognisable shape (a reading in
  pinyin or IPA, a year, a book title, a count or length with its unit, a short label), asked in everyday
  words that neither the config's lists nor the value-shape question forms of query_understanding hold.

Each returns (records, questions): a question is (text, the kid it asks for, the entity it names).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BASES = ("Harbor Lantern", "Copperleaf Kettle", "Northwind Anemometer", "Juniper Field Stove", "Quarry Hand Drill",
         "Bramble Seed Spreader", "Tidewater Rain Gauge", "Foxglove Sewing Machine", "Ironbark Splitting Maul",
         "Meadowlark Egg Incubator", "Saltmarsh Wader Boots", "Granite Pestle", "Ember Forge Blower",
         "Willow Fishing Reel", "Cobalt Soldering Iron", "Lichen Moisture Meter")
VARIANTS = ("{} with Brass Hood", "{} with Folding Stand and Travel Case", "Heavy-Duty {} with Reinforced Steel Frame",
            "{} for Cold Climates, Deluxe Edition", "Compact {} with Rechargeable Battery Pack and Carry Strap")
DESIGNERS = ("Mara Oyelaran", "Tobias Venn", "Ilse Marchetti", "Corwin Abara", "Priya Halvorsen", "Dmitri Ostrova")
MATERIALS = ("brushed aluminium", "cast iron", "walnut and brass", "stainless steel", "recycled polymer")
COUNTRIES = ("Portugal", "Canada", "Vietnam", "Chile", "Norway", "Morocco")
# attribute → (how the value is made, questions in words no config list holds)
WORKSHOP_ATTRIBUTES = {
    "weight": (lambda r, _name: f"{r.randint(2, 90) / 10:.1f} kg", ("how heavy is the {}", "what does the {} weigh")),
    "designer": (lambda r, _name: r.choice(DESIGNERS), ("who designed the {}", "who came up with the {}")),
    "year introduced": (lambda r, _name: str(r.randint(1961, 2024)), ("when did the {} first come out",
                                                               "what year was the {} launched")),
    "material": (lambda r, _name: r.choice(MATERIALS), ("what is the {} made of",
                                                        "what material is the {} built from")),
    "price": (lambda r, _name: f"{r.randint(19, 900)} EUR", ("how much does the {} cost",
                                                             "what is the price of the {}")),
    "country of manufacture": (lambda r, _name: r.choice(COUNTRIES), ("where is the {} manufactured",
                                                              "which country makes the {}")),
}

PRODUCT_NAMES = ("Zephyr X1 Carbon Gen 12 Aura Edition", "Zephyr X1 Carbon Gen 12", "Zephyr X1 Carbon",
                 "Zephyr X1", "Nova 7", "Nova 7 Pro", "Nova 7 Pro Max", "AeroBook Air 15 M3 Midnight 2026",
                 "AeroBook Air 15 M3", "AeroBook Air 13", "Lumen Pad 11 Ultra 2026", "Lumen Pad 11",
                 "Kestrel K40 Mini", "Kestrel K40", "Orbit Watch S9 LTE", "Orbit Watch S9", "Quill E-Reader 6",
                 "Quill E-Reader 6 Plus", "星河 Vega 3 Pro", "星河 Vega 3")
# 属性 → (取值, 问法): the questions are everyday Chinese, none of them a config list's word
GADGET_ATTRIBUTES = {
    "重量": (lambda r, _name: f"{r.randint(150, 2400)}克", ("{}的重量", "{} 有多重")),
    "售价": (lambda r, _name: f"{r.randint(9, 199) * 100 - 1}元", ("{}多少钱", "{} 卖多少钱")),
    "电池容量": (lambda r, _name: f"{r.randint(20, 99) * 100}毫安时", ("{}的电池容量", "{} 电池有多大")),
    "屏幕尺寸": (lambda r, _name: f"{r.randint(13, 170) / 10:.1f}英寸", ("{}屏幕多大", "{} 的屏幕尺寸")),
    "上市时间": (lambda r, _name: f"{r.randint(2019, 2026)}年{r.randint(1, 12)}月",
                 ("{}什么时候上市", "{} 哪年发布的")),
}


TOWN_SYLLABLES = ("云", "岚", "青", "溪", "松", "柏", "霞", "川", "枫", "桥", "梧", "桐", "澜", "屿", "苇", "塘")
TOWN_COUNTRIES = ("北原国", "南湾国", "东岭国", "西沙国")
# Questions about an entity as a whole in wordings that no config list, intent example or overview question
# form of the product holds (query_understanding/attributes.py OVERVIEW_QUESTIONS): held out by construction.
OVERVIEW_WORDINGS = ("{}给我讲讲", "说一说{}", "我想了解一下{}", "{}你知道些什么", "{}的相关知识", "{}大概是怎么回事",
                     "科普一下{}")


POEM_SYLLABLES = ("青", "溪", "月", "夜", "松", "风", "寒", "江", "孤", "舟", "春", "望", "秋", "思", "山", "居", "暮",
                  "雪", "晴", "归", "雁", "桃", "源", "柳", "岸")
POETS = ("林澜舟", "苏晚亭", "顾青岩", "沈南乔", "陆听雨", "程砚秋")
COLLECTIONS = ("《松风集》", "《寒江诗钞》", "《听雨楼稿》", "《南乔吟草》", "《青岩遗集》")
FORMS = ("五言绝句", "七言绝句", "五言律诗", "七言律诗", "古体诗")
# 属性 → (取值, 问法): everyday questions that no config list or value-shape question form holds
POEM_ATTRIBUTES = {
    "读音": (lambda r, name: _pinyin(name), ("{}这几个字怎么念", "{}念什么")),
    "写作年代": (lambda r, name: f"{r.randint(1650, 1911)}年", ("{}是哪一年写的", "{}写于何时")),
    "出自": (lambda r, name: r.choice(COLLECTIONS), ("{}收在哪本集子里", "{}是哪本书里的")),
    "字数": (lambda r, name: f"{r.choice((20, 28, 40, 56, 84))}字", ("{}一共几个字", "{}有多长")),
    "作者": (lambda r, name: r.choice(POETS), ("{}是谁写的", "谁写了{}")),
    "体裁": (lambda r, name: r.choice(FORMS), ("{}属于什么诗体", "{}是什么格式的诗")),
}

TRAIL_WORDS = ("Saltmarsh", "Bracken", "Heron", "Flint", "Alder", "Curlew", "Tamarack", "Gorse", "Osprey", "Larch",
               "Sorrel", "Kestrel")
TRAIL_KINDS = ("Ridge Walk", "Loop", "Towpath", "Coast Path", "Falls Trail")
KEEPERS = ("Ridgeline Trust", "County Rangers", "Friends of the Fells", "Northern Paths Society")
SURFACES = ("gravel", "boardwalk", "packed earth", "tarmac", "rocky scramble")
TRAIL_ATTRIBUTES = {
    "length": (lambda r, name: f"{r.randint(20, 400) / 10:.1f} km", ("how far is it along the {}",
                                                                     "how long a walk is the {}")),
    "elevation gain": (lambda r, name: f"{r.randint(40, 1600)} m", ("how much climbing is there on the {}",
                                                                    "how steep is the {} overall")),
    "opened": (lambda r, name: str(r.randint(1921, 2023)), ("since when has the {} been open",
                                                            "how old is the {}")),
    "pronunciation": (lambda r, name: _ipa(name), ("how do you say {} out loud", "how is {} spoken")),
    "maintained by": (lambda r, name: r.choice(KEEPERS), ("who looks after the {}", "who keeps the {} in repair")),
    "surface": (lambda r, name: r.choice(SURFACES), ("what is underfoot on the {}", "is the {} paved")),
}


def poems() -> tuple[list[dict], list[tuple[str, str, str]]]:
    rng = random.Random(1907)
    names = sorted({"".join(rng.sample(POEM_SYLLABLES, 4)) for _ in range(40)})
    return _build(names, POEM_ATTRIBUTES, "诗词", "poem", rng, typed=lambda name, _rng: name)


def trails() -> tuple[list[dict], list[tuple[str, str, str]]]:
    rng = random.Random(4410)
    names = sorted({f"{rng.choice(TRAIL_WORDS)} {rng.choice(TRAIL_KINDS)}" for _ in range(40)})
    return _build(names, TRAIL_ATTRIBUTES, "trail", "trail", rng, typed=lambda name, _rng: name.lower())


def _pinyin(text: str) -> str:
    from pypinyin import Style, pinyin

    return " ".join(syllable[0] for syllable in pinyin(text, style=Style.TONE))


_IPA = str.maketrans({"a": "æ", "e": "ɛ", "i": "ɪ", "o": "ɒ", "u": "ʌ", "c": "k", "y": "j", "r": "ɹ"})


def _ipa(name: str) -> str:
    """A made-up but IPA-shaped reading (stress marks, IPA letters between slashes) of a made-up name."""
    return "/" + " ".join("ˈ" + word.lower().translate(_IPA) for word in name.split()) + "/"


def towns() -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Towns of the 城市 category; the questions ask about each town as a whole (its 国家 record answers)."""
    rng = random.Random(77)
    names = sorted({rng.choice(TOWN_SYLLABLES) + rng.choice(TOWN_SYLLABLES) + rng.choice("市镇") for _ in range(40)})
    records, questions = [], []
    for number, name in enumerate(names):
        values = {"国家": rng.choice(TOWN_COUNTRIES), "人口": str(rng.randint(5_000, 900_000)),
                  "时区": f"UTC+{rng.randint(5, 9)}", "别名": name[:2] + rng.choice(("堡", "营", "关")),
                  "坐标": f"{rng.uniform(20, 45):.3f}, {rng.uniform(90, 130):.3f}"}
        for attribute, value in values.items():
            records.append({"kid": f"town:{number}:{attribute}", "knowledge": name, "attribute": attribute,
                            "value": value, "category": "城市", "ref": f"atlas#{number}"})
        questions += [(wording.format(name), f"town:{number}:国家", name) for wording in OVERVIEW_WORDINGS]
    return records, questions


def workshop() -> tuple[list[dict], list[tuple[str, str, str]]]:
    rng = random.Random(2612)
    names = [*BASES, *(variant.format(base) for base in BASES for variant in VARIANTS)]
    return _build(names, WORKSHOP_ATTRIBUTES, "tool", "workshop", rng, typed=_typed_english)


def gadgets() -> tuple[list[dict], list[tuple[str, str, str]]]:
    return _build(list(PRODUCT_NAMES), GADGET_ATTRIBUTES, "数码产品", "gadget", random.Random(511),
                  typed=lambda name, _rng: name)


def _typed_english(name: str, rng: random.Random) -> str:
    """How a user types a name: lower case, a hyphen sometimes as a space, the comma often left out."""
    typed = name.lower()
    if rng.random() < 0.5:
        typed = typed.replace("-", " ")
    if rng.random() < 0.5:
        typed = typed.replace(",", "")
    return typed


def _build(names, attributes, category, prefix, rng, typed) -> tuple[list[dict], list[tuple[str, str, str]]]:
    records, questions = [], []
    for number, name in enumerate(names):
        for attribute, (value, wordings) in attributes.items():
            kid = f"{prefix}:{number}:{attribute}"
            records.append({"kid": kid, "knowledge": name, "attribute": attribute, "value": value(rng, name),
                            "category": category, "ref": f"{prefix}-catalogue#{number}"})
            questions += [(wording.format(typed(name, rng)), kid, name) for wording in wordings]
    return records, questions


def write_jsonl(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
