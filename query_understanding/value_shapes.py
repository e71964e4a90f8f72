"""What an attribute's values look like, read from the KB, and the questions that ask for values of that look.

An attribute's name and synonyms say what it is called; its values say what a question about it asks for. A
value in pinyin or IPA answers "how is it pronounced", a year answers "when", a number with a unit "how
much", a book title "which book", a person's name "who"; prose says nothing (a definition, an example
sentence and a quoted source are all prose, asked for in different ways), so it has no shape. Each attribute
gets the shape most of its values have (decided when a version is built, over every record), and the
attribute ranker treats that shape's question forms as weaker evidence for the attribute than its own name:
a question in words no list holds ("X怎么念" about a KB whose 读音 values are pinyin) then reaches the
attribute whose values answer it. The shapes and their forms are about kinds of value, per language, so they
hold for a KB the code has never seen; `query_understanding.value_shape_questions` in the config replaces
the forms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Shape -> question forms per language that ask for a value of that shape without naming any attribute.
SHAPE_QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "reading": {"zh": ("怎么读", "读音", "发音", "拼音", "读作", "怎么发音"),
                "en": ("how do you pronounce", "pronunciation", "how to say", "how is it pronounced", "sound")},
    "date": {"zh": ("什么时候", "何时", "哪年", "哪一年", "年份", "日期", "时间"),
             "en": ("when", "what year", "which year", "what date", "date")},
    "money": {"zh": ("多少钱", "价格", "价钱", "贵不贵", "费用"),
              "en": ("how much does it cost", "price", "cost", "how expensive")},
    "quantity": {"zh": ("多少", "多大", "多长", "多重", "多高", "多远", "几", "数量"),
                 "en": ("how many", "how much", "how big", "how long", "how heavy", "how far", "how large", "number")},
    "title": {"zh": ("出自哪里", "出处", "哪本书", "哪部作品", "书名", "来源"),
              "en": ("which book", "what book", "source", "where is it from", "title")},
    "place": {"zh": ("在哪", "位置", "坐标", "地点"), "en": ("where", "location", "coordinates")},
    "link": {"zh": ("网址", "官网", "链接"), "en": ("website", "url", "link", "homepage")},
    "yes_no": {"zh": ("是否", "是不是", "有没有"), "en": ("is it", "does it", "whether")},
    "list": {"zh": ("有哪些", "都有什么", "包括"), "en": ("which ones", "what are", "list", "examples")},
    "name": {"zh": ("谁", "哪位", "什么人", "哪家"), "en": ("who", "by whom", "whose", "which company")},
    "label": {"zh": ("什么类型", "哪一类", "哪种", "类别"),
              "en": ("what kind", "what type", "which kind", "what sort")},
}
_TONE_MARKS = "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ"
_PINYIN = re.compile(rf"^[a-zü{_TONE_MARKS}'’\- ]+$", re.IGNORECASE)
_IPA = re.compile(r"^[/\[].*[ˈˌːəɪʊæɑɒɔɛɜʌθðŋʃʒɹ].*[/\]]$")
_NUMBER = r"[-+]?\d[\d,，]*(?:\.\d+)?"
_DATE = re.compile(r"^(?:(?:公元前?)?\d{1,4}年(?:\d{1,2}月(?:\d{1,2}日)?)?|\d{4}-\d{1,2}(?:-\d{1,2})?"
                   r"|\d{1,2}(?:st|nd|rd|th) century|\d{1,2}世纪|(?:1\d|20)\d{2}"
                   r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? (?:\d{1,2}, )?\d{4})$",
                   re.IGNORECASE)
_MONEY = re.compile(rf"^(?:[$€£¥￥]\s*{_NUMBER}|{_NUMBER}\s*(?:元|块|美元|欧元|英镑|日元|eur|usd|gbp|cny|rmb|dollars?"
                    rf"|euros?|pounds?))$", re.IGNORECASE)
_QUANTITY = re.compile(rf"^(?:约|~|≈|about )?{_NUMBER}\s*(?:[%°‰]|[a-zA-Zµ²³/]{{1,6}}|[\u4e00-\u9fff]{{1,4}})?$")
# A count or measure with words around it (1.7 litres of water, four slices, 一档26分贝): short values only.
_NUMBER_WORD = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
                r"hundred|thousand|half|a dozen)")  # Chinese numerals open idioms and titles too (三心二意)
_COUNTED = re.compile(rf"^(?:about |around |约)?(?:{_NUMBER}|{_NUMBER_WORD})\s*"
                      rf"(?:[a-zA-Z]{{1,12}}|[\u4e00-\u9fff]{{1,3}})(?:\b|(?=[\u4e00-\u9fff]))", re.IGNORECASE)
_MEASURE_INSIDE = re.compile(rf"{_NUMBER}\s*(?:[%°‰]|[a-zA-Zµ²³]{{1,4}}\b|[\u4e00-\u9fff]{{1,3}})")
_TITLE = re.compile(r"^[《〈「『“\"].+[》〉」』”\"]")
_DEGREES = r"[-+]?\d{1,3}\.\d+°?"
_PLACE = re.compile(rf"^{_DEGREES}\s*[NSns]?\s*[,，]\s*{_DEGREES}\s*[EWew]?$")
_LINK = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_YES_NO = re.compile(r"^(?:是|否|有|无|没有|yes|no|true|false|y|n)$", re.IGNORECASE)
_LIST = re.compile(r"[、,，;；|]")
_PROPER_NAME = re.compile(r"^[A-Z][\w'’.-]+(?: (?:of |the |and |de |van |von )?[A-Z][\w'’.-]+){1,3}$")
_HAN_NAME = re.compile(r"^[\u4e00-\u9fff]{2,3}$")
# The commonest Chinese family names: a two- or three-character value starting with one reads as a person.
_SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
                      "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
                      "武戴莫孔向汤欧")
_HAN = re.compile(r"[\u4e00-\u9fff]")
SAMPLED_VALUES = 400  # values of each attribute read to decide its shape
MAX_LABELS = 50  # an attribute of short values with at most this many distinct ones (and repeats) is a label


def value_shape(value: str) -> str | None:
    """The shape of one value, the most specific that fits; None for a short value of no particular look."""
    text = value.strip()
    if not text:
        return None
    checks = ((_LINK, "link"), (_IPA, "reading"), (_PLACE, "place"), (_DATE, "date"), (_MONEY, "money"),
              (_QUANTITY, "quantity"), (_TITLE, "title"), (_YES_NO, "yes_no"))
    for pattern, shape in checks:
        if pattern.match(text):
            return shape
    if _PINYIN.match(text) and any(mark in text.lower() for mark in _TONE_MARKS):
        return "reading"
    short = len(text.split()) <= 6 and len(_HAN.findall(text)) <= 16
    if short and (_COUNTED.match(text) or _MEASURE_INSIDE.search(text)):
        return "quantity"
    parts = [part.strip() for part in _LIST.split(text)]
    if len(parts) >= 3 and all(len(part.split()) <= 4 and len(part) <= 24 and len(_HAN.findall(part)) <= 8
                               for part in parts):  # names, not the clauses of a sentence
        return "list"
    if _PROPER_NAME.match(text) or (_HAN_NAME.match(text) and text[0] in _SURNAMES):
        return "name"
    return None  # prose (a definition, an example, a quoted source) says nothing about how it is asked for


def attribute_shapes(records: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each attribute's shape from its (attribute, value) records: the shape of more than half of its first
    `SAMPLED_VALUES` values, else `label` when those are short and repeat among few distinct values."""
    values: dict[str, list[str]] = {}
    for attribute, value in records:
        kept = values.setdefault(attribute, [])
        if len(kept) < SAMPLED_VALUES:
            kept.append(value)
    shapes = {}
    for attribute, kept in values.items():
        counted = Counter(value_shape(value) for value in kept)
        shape, count = counted.most_common(1)[0]
        distinct = len(set(kept))
        if shape is not None and count * 2 > len(kept):
            shapes[attribute] = shape
        elif (counted[None] * 2 > len(kept) and distinct <= MAX_LABELS and distinct * 2 <= len(kept)
              and all(len(value) <= 24 for value in kept)):
            shapes[attribute] = "label"
    return shapes


def default_shape_questions() -> dict[str, tuple[str, ...]]:
    """Every shape's question forms, all languages together: the config's default."""
    return {shape: tuple(form for forms in languages.values() for form in forms)
            for shape, languages in SHAPE_QUESTIONS.items()}
