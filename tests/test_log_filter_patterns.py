"""CloudWatch Logs filter patterns: AWS's documented examples, our choices, errors."""

from __future__ import annotations

import json

import pytest

from pipelines.errors import FilterPatternError, LogsError
from plugins.logs.filterpattern import FilterPattern, parse_filter_pattern


def matches(pattern: str, message: str) -> bool:
    return parse_filter_pattern(pattern).match(message) is not None


def which(pattern: str, messages: list[str]) -> list[int]:
    """The 1-based numbers of the messages ``pattern`` matches."""
    compiled = parse_filter_pattern(pattern)
    return [n for n, m in enumerate(messages, 1) if compiled.match(m) is not None]


def error(pattern: str) -> FilterPatternError:
    with pytest.raises(FilterPatternError) as caught:
        parse_filter_pattern(pattern)
    return caught.value


# -- everything --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["", "   ", "\t\n", '" "', '""', '"   "'])
def test_blank_patterns_match_every_event(pattern: str) -> None:
    compiled = parse_filter_pattern(pattern)
    assert compiled.kind == "all"
    for message in ["", "anything", '{"a": 1}', "no-spaces-here"]:
        assert compiled.match(message) is not None


# -- unstructured terms: AWS's examples ------------------------------------------------

AWS_EVENTS = [
    "[ERROR 400] BAD REQUEST",  # 1
    "[ERROR 401] UNAUTHORIZED REQUEST",  # 2
    "[ERROR 419] MISSING ARGUMENTS",  # 3
    "[ERROR 420] INVALID ARGUMENTS",  # 4
    "[ERROR 500] INTERNAL SERVER ERROR",  # 5
    "[INFO] REQUEST FAILED",  # 6
    "[WARN] UNAUTHORIZED REQUEST",  # 7
    "[SUCCESS 200] AUTHORIZED REQUEST",  # 8
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ERROR", [1, 2, 3, 4, 5]),
        ("ERROR ARGUMENTS", [3, 4]),
        ("?ERROR ?ARGUMENTS", [1, 2, 3, 4, 5]),
        # AWS: "?" terms are ignored when combined with other terms.
        ("?ERROR ?ARGUMENTS REQUEST", [1, 2, 6, 7, 8]),
        ('"INTERNAL SERVER ERROR"', [5]),
        ("ERROR -ARGUMENTS", [1, 2, 5]),
        ('" "', [1, 2, 3, 4, 5, 6, 7, 8]),
        ("%AUTHORIZED%", [2, 7, 8]),
        ("-ERROR", [6, 7, 8]),
        ("error", []),  # case-sensitive
        ('"ERROR 4"', [1, 2, 3, 4]),
    ],
)
def test_terms_aws_examples(pattern: str, expected: list[int]) -> None:
    assert parse_filter_pattern(pattern).kind in ("terms", "all")
    assert which(pattern, AWS_EVENTS) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        # The OR pattern matching section: 1 "ERROR WARN message", 2 "ERROR message", 3 "WARN message".
        ("ERROR", [1, 2]),
        ("?ERROR ?WARN", [1, 2, 3]),
        ("ERROR WARN", [1]),
        ("ERROR -WARN", [2]),
    ],
)
def test_terms_or_examples(pattern: str, expected: list[int]) -> None:
    assert which(pattern, ["ERROR WARN message", "ERROR message", "WARN message"]) == expected


def test_terms_match_inside_words_as_aws_documents() -> None:
    # The older guide: "ERROR" matches "Exiting with ERRORCODE: -1"; "ERROR -Exiting" does not.
    assert matches("ERROR", "Exiting with ERRORCODE: -1")
    assert not matches("ERROR -Exiting", "Exiting with ERRORCODE: -1")
    assert matches("ERROR -Exiting", "[ERROR] A fatal exception has occurred")
    assert matches("ERROR Exception", "[ERROR] Caught IllegalArgumentException")
    assert matches("Failed to process the request", "[WARN] Failed to process the request")
    assert not matches("Failed to process the request", "[WARN] Failed to process request")


@pytest.mark.parametrize(
    ("pattern", "message", "expected"),
    [
        ('"a \\"quoted\\" word"', 'say a "quoted" word', True),
        ('"back\\\\slash"', "a back\\slash", True),
        ("?%^GET% ?%^PUT%", "PUT /x", True),
        ("?%^GET% ?%^PUT%", "DELETE /x", False),
        ("ERROR -%4\\d\\d%", "ERROR 500", True),
        ("ERROR -%4\\d\\d%", "ERROR 404", False),
        ("Größe", "die Größe", True),
        ("snake_case", "a snake_case name", True),
        ('-" "', "no match for anything", False),
    ],
)
def test_terms_quotes_regex_and_signs(pattern: str, message: str, expected: bool) -> None:
    assert matches(pattern, message) is expected


# -- regex: AWS's operator examples ------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "yes", "no"),
    [
        ("%^[hc]at%", ["hat trick", "cat"], ["a hat", "bat"]),
        ("%[hc]at$%", ["the cat", "a hat"], ["cats", "hat trick"]),
        ("%colou?r%", ["color", "colour"], ["colr"]),
        ("%[abc]%", ["a", "xbx", "c"], ["xyz"]),
        ("%[a-z]%", ["Q q"], ["QQ 12"]),
        ("%[abcx-z]%", ["y"], ["d"]),
        ("%a{3,5}%", ["aaa", "aaaa", "baaaaab"], ["aa", "a a a"]),
        ("%a{3, 5}%", ["aaa"], ["aa"]),
        ("%a{2,}%", ["aa"], ["a"]),
        ("%gra|ey%", ["gray", "grey"], ["gr"]),
        (
            "%^starting|^initializing|^shutting down%",
            ["starting up", "initializing db", "shutting down"],
            ["skipping initializing x", "shutting"],
        ),
        ("%\\[.\\]%", ["[a]", "[7]", "[@]", "[]]", "[ ]"], ["[ab]", "[]"]),
        ("%10\\.10\\.0\\.1%", ["ip 10.10.0.1"], ["10010,051"]),
        ("%10.10.0.1%", ["10010,051"], ["10.10.0.2"]),
        ("%ab*c%", ["ac", "abc", "abbbc"], ["abd"]),
        ("%ab[0-9]*%", ["ab", "ab0", "ab129"], ["a b"]),
        ("%ab+c%", ["abc", "abbc"], ["ac"]),
        ("%.at%", ["hat", "#at", " at"], ["at"]),
        ("%\\d%", ["a1"], ["abc"]),
        ("%\\D%", ["1a1"], ["123"]),
        ("%\\s%", ["a b", "a\tb"], ["ab"]),
        ("%\\S%", [" a "], ["   "]),
        ("%\\w%", ["_"], ["!?", "é"]),  # \w is ASCII, as AWS documents
        ("%\\W%", ["a-b"], ["a_b"]),
        ("%\\x3A%", ["a:b"], ["ab"]),
        ("%\\x28%", ["f(x)"], ["fx"]),
        ("%\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}%", ["from 192.168.0.1"], ["192.168.0"]),
        ("%[Ee]rror|[Ff]ail%", ["Error", "error", "Fail", "fail"], ["ERROR", "FAIL"]),
        ("%user=[a-z]+;id=#\\d+%", ["user=bob;id=#12"], ["user=Bob;id=#12"]),
    ],
)
def test_regex_aws_operator_examples(regex: str, yes: list[str], no: list[str]) -> None:
    for message in yes:
        assert matches(regex, message), message
    for message in no:
        assert not matches(regex, message), message


# -- JSON: AWS's examples ----------------------------------------------------------------

TRAIL = json.dumps(
    {
        "eventType": "UpdateTrail",
        "sourceIPAddress": "111.111.111.111",
        "arrayKey": ["value", "another value"],
        "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
        "SomeObject": None,
        "ThisFlag": True,
        "cluster.name": "c",
    }
)

USERS = json.dumps(
    {
        "user": {"id": 1, "email": "John.Stiles@example.com"},
        "users": [
            {"id": 2, "email": "John.Doe@example.com"},
            {"id": 3, "email": "Jane.Doe@example.com"},
        ],
        "actions": ["GET", "PUT", "DELETE"],
        "coordinates": [[0, 1, 2], [4, 5, 6], [7, 8, 9]],
    }
)


@pytest.mark.parametrize(
    "pattern",
    [
        '{ $.eventType = "UpdateTrail" }',
        "{ $.sourceIPAddress != 123.123.* }",
        '{ $.arrayKey[0] = "value" }',
        "{ $.eventType = %Trail% }",
        "{ $.arrayKey[*] = %val.{2}% }",
        "{ $.* = %111\\.111\\.111\\.1[0-9]{1,2}% }",
        "{ $.['cluster.name'] = \"c\" }",
        "{ $.objectList[1].id = 2 }",
        "{ $.SomeObject IS NULL }",
        "{ $.SomeOtherObject NOT EXISTS }",
        "{ $.ThisFlag IS TRUE }",
    ],
)
def test_json_aws_examples_match(pattern: str) -> None:
    compiled = parse_filter_pattern(pattern)
    assert compiled.kind == "json"
    assert compiled.match(TRAIL) is not None


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }', True),
        ('{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }', False),
        (
            '{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = "nonmatch" && $.actions[2] = "nonmatch" }',
            True,
        ),
        (
            '{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = "nonmatch") && $.actions[2] = "nonmatch" }',
            False,
        ),
        # The older guide's spelling, with bare values.
        (
            '{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch && $.actions[2] = nomatch }',
            True,
        ),
        ("{ $.coordinates[2][0] = 7 && $.users[1].id >= 3 }", True),
    ],
)
def test_json_compound_aws_examples(pattern: str, expected: bool) -> None:
    assert matches(pattern, USERS) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("{$.foo = bar}", [1]), ("{$.foo = baz }", [2]), ("{$.foo = bar || $.foo = baz }", [1, 2])],
)
def test_json_or_examples(pattern: str, expected: list[int]) -> None:
    assert which(pattern, ['{"foo": "bar"}', '{"foo": "baz"}']) == expected


def test_json_selector_on_array_or_object_matches_neither_equal_nor_not_equal() -> None:
    # AWS: "both {$.users = 1} and {$.users != 1} will fail to match" when users is an array.
    assert not matches("{$.users = 1}", '{"users": [1, 2, 3]}')
    assert not matches("{$.users != 1}", '{"users": [1, 2, 3]}')
    assert not matches('{$.user != "x"}', '{"user": {"id": 1}}')


NUMBERS = json.dumps(
    {
        "latency": 700,
        "bandwidth": 80.5,
        "numbers": [5, 0.001, 1000],
        "number": [1000, 0.001],
        "processes": [{}, {}, {}, {}, {"averageRuntime": 55.5}],
        "errorCode": 400,
        "negative": -12.5,
        "text": "300",
    }
)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("{ $.latency >= 500 }", True),
        ("{ $.latency > +1000 }", False),
        ("{ $.numbers[0] < 10e3 }", True),
        ("{ $.numbers[0] < 10e-3 }", False),
        ("{ $.numbers[1] < 10e-3 }", True),
        ("{ $.processes[4].averageRuntime <= 55.5 }", True),
        ("{ $.processes[4].averageRuntime < 55.5 }", False),
        ("{ $.errorCode = 400}", True),
        ("{ $.errorCode != 500 }", True),
        ("{ $.errorCode != 400 }", False),
        ("{ $.number[0] = 1e+3 }", True),
        ("{ $.number[1] = 1e-3 }", True),
        ("{ $.number[1] != 1e-3 }", False),
        ("{ $.bandwidth > 75 }", True),
        ("{ $.bandwidth = 80.50 }", True),
        ("{ $.negative < -12 }", True),
        ("{ $.negative >= -12.49 }", False),
        ("{ $.negative = -1.25E1 }", True),
        ("{ $.errorCode = 4* }", True),  # AWS: "Use the asterisk as a wild card to match numbers"
        ("{ $.latency = * }", True),
        ("{ $.absent = * }", False),
        ("{ $.absent != 1 }", False),
        ("{ $.absent < 1 }", False),
        ("{ $.text > 200 }", True),  # a numeric string compares as a number
        ("{ $.text = 300 }", True),
        ('{ $.errorCode = "400" }', True),  # text equality with the number's JSON text
        ("{ $.latency > 100 && $.errorCode = 400 }", True),
    ],
)
def test_json_numbers(pattern: str, expected: bool) -> None:
    assert matches(pattern, NUMBERS) is expected


LEVELS = json.dumps(
    {
        "level": "ERROR",
        "eventType": "UpdateTrail",
        "empty": "",
        "flag": False,
        "nothing": None,
        "tags": ["a", "bb", "ccc"],
        "items": [{"id": 1}, {"id": 7}],
        "meta": {"region": "eu-west-1", "zone": "b"},
        "with space": 1,
    }
)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('{ $.eventType = "Update*" }', True),
        ("{ $.eventType = Update* }", True),
        ("{ $.eventType = *Trail }", True),
        ("{ $.eventType = *date* }", True),
        ("{ $.eventType = Up*ail }", False),  # "*" in the middle is literal
        ('{ $.eventType = "Update" }', False),  # exact unless wildcarded
        ("{ $.eventType != Update* }", False),
        ("{ $.eventType = UpdateTrail }", True),
        ("{ $.level = error }", False),  # case-sensitive
        ('{ $.empty = "" }', True),
        ("{ $.flag IS FALSE }", True),
        ("{ $.flag IS TRUE }", False),
        ("{ $.flag is false }", True),
        ("{ $.nothing IS NULL }", True),
        ("{ $.level IS NULL }", False),
        ("{ $.absent IS NULL }", False),
        ("{ $.nothing NOT EXISTS }", False),
        ("{ $.flag = false }", False),  # booleans are tested with IS, not =
        ("{ $.nothing != x }", False),
        ("{ $.tags[*] = bb }", True),
        ("{ $.tags[*] = dd }", False),
        ("{ $.tags[*] != a }", True),  # any selected value
        ("{ $.items[*].id = 7 }", True),
        ("{ $.items[*].id > 7 }", False),
        ("{ $.items[*].missing NOT EXISTS }", True),
        ("{ $.meta.* = eu-west-1 }", True),
        ("{ $.meta.* = %^[a-z]$% }", True),
        ("{ $.*.zone = b }", True),
        ("{ $.['with space'] = 1 }", True),
        ('{ $.["with space"] = 1 }', True),
        ("{ $.meta['region'] = eu* }", True),
        ("{ $.tags[5] NOT EXISTS }", True),
        ("{ $.level.deeper NOT EXISTS }", True),
        ("{ $.level != %^WARN% && ($.meta.zone = a || $.meta.zone = b) }", True),
        ('{ $.level = "ERROR" && $.meta.zone = a || $.flag IS FALSE }', True),
        ('{ $.level = "ERROR" && ($.meta.zone = a || $.flag IS TRUE) }', False),
        ('{(($.level="ERROR"))&&$.meta.zone=b}', True),
    ],
)
def test_json_strings_wildcards_and_keywords(pattern: str, expected: bool) -> None:
    assert matches(pattern, LEVELS) is expected


@pytest.mark.parametrize(
    "message", ["ERROR level", "[1, 2]", '"a string"', "{not json", "", "null", "7"]
)
def test_json_pattern_needs_a_json_object(message: str) -> None:
    assert not matches('{ $.level != "ERROR" }', message)
    assert not matches("{ $.level NOT EXISTS }", message)


def test_json_object_with_leading_whitespace_and_big_numbers() -> None:
    assert matches('{ $.level = "WARN" }', '  \n {"level": "WARN"}')
    assert matches("{ $.id > 1 }", '{"id": 123456789012345678901234567890}')


# -- space-delimited: AWS's examples -----------------------------------------------------

APACHE = '127.0.0.1 Prod frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534'


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[ip, user, username, timestamp, request, status_code, bytes]", True),
        (
            "[ip=%127\\.0\\.0\\.[1-9]%, user, username, timestamp, request =*.html*, status_code = 4*, bytes]",
            True,
        ),
        ("[..., request =*.html*, status_code = 4*, bytes]", True),
        (
            "[ip, user, username, timestamp, request =*.html*, status_code = 404 || status_code = 410, bytes]",
            True,
        ),
        ("[ip, user, username, timestamp, request, status_code, bytes > 1000]", True),
        ("[ip, user, username, timestamp, request, status_code = 200, bytes]", False),
        ("[ip, user, username, timestamp, request, status_code = 4*, bytes]", True),
        ("[ip, user, username, timestamp, request = *html*, status_code = 4*, bytes]", True),
        (
            "[ip, user, username, timestamp, request, status_code = 4* && status_code != 403, bytes]",
            True,
        ),
        (
            "[ip, user, username, timestamp, request, status_code = 4* && status_code != 404, bytes]",
            False,
        ),
        ("[..., status_code, bytes]", True),
        ("[ip, user, ..., status_code, bytes]", True),
        ("[ip, user, ...]", True),
        ("[ip = 127.0.0.2, ...]", False),
        ('[..., request = "GET /index.html HTTP/1.0", status_code, bytes]', True),
        ("[..., timestamp = 10/Oct/2000*, request, status_code, bytes]", True),
        ("[..., bytes < 1000]", False),
        ("[..., bytes >= 1534]", True),
        ("[ip, user, username, timestamp, request, status_code, bytes, extra]", False),
        ("[..., a, b, c, d, e, f, g, h]", False),
    ],
)
def test_delimited_aws_examples(pattern: str, expected: bool) -> None:
    compiled = parse_filter_pattern(pattern)
    assert compiled.kind == "delimited"
    assert (compiled.match(APACHE) is not None) is expected


SERVICE_LOG = [
    "INFO 09/25/2014 12:00:00 GET /service/resource/67 1200",
    "INFO 09/25/2014 12:00:01 POST /service/resource/67/part/111 1310",
    "WARNING 09/25/2014 12:00:02 Invalid user request",
    "ERROR 09/25/2014 12:00:02 Failed to process request",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[w1=ERROR, w2]", [4]),
        ("[w1=ERROR || w1=WARNING, w2]", [3, 4]),
        ("[w1!=ERROR && w1!=WARNING, w2]", [1, 2]),
        ("[logLevel, date, time, method, url=%/service/resource/[0-9]+$%, response_time]", [1]),
        (
            "[logLevel, date, time, method, url=%/service/resource/[0-9]+/part/[0-9]+$%, response_time]",
            [2],
        ),
        ("[level, ..., ms > 1250]", [2]),
        ("[..., ms = 1*]", [1, 2]),
    ],
)
def test_delimited_w1_examples(pattern: str, expected: list[int]) -> None:
    assert which(pattern, SERVICE_LOG) == expected


def test_delimited_last_field_takes_the_rest_of_the_line() -> None:
    found = parse_filter_pattern("[w1=ERROR, w2]").match("ERROR WARN message")
    assert found is not None
    assert found.value("$w2") == "WARN message"
    assert not matches("[a, b, c]", "only two")
    assert matches("[a, b, c]", "one two three")


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ('a "b c" d', ["a", "b c", "d"]),
        ("a [b c] d", ["a", "b c", "d"]),
        ('a  \t "" []  d', ["a", "", "", "d"]),
        ('a "unclosed b c', ["a", "unclosed b c"]),
        ("[x] [y z]", ["x", "y z"]),
    ],
)
def test_delimited_grouping(line: str, fields: list[str]) -> None:
    names = [f"f{i}" for i in range(len(fields))]
    found = parse_filter_pattern(f"[{', '.join(names)}]").match(line)
    assert found is not None
    assert [found.value(f"${n}") for n in names] == fields


# -- Match.value -----------------------------------------------------------------------


def test_match_value_json() -> None:
    found = parse_filter_pattern('{ $.level = "ERROR" }').match(
        json.dumps(
            {
                "level": "ERROR",
                "latency": 153.2,
                "status": 500,
                "ok": False,
                "user": {"id": 42, "tags": ["x", "y"]},
                "none": None,
                "a.b": "dotted",
            }
        )
    )
    assert found is not None
    assert found.value("$.latency") == 153.2
    assert found.value("$.status") == 500
    assert found.value("$.ok") is False
    assert found.value("$.user.id") == 42
    assert found.value("$.user.tags[1]") == "y"
    assert found.value("$.['a.b']") == "dotted"
    assert found.value("$.user") is None  # an object is not a value
    assert found.value("$.user.tags") is None
    assert found.value("$.none") is None
    assert found.value("$.missing") is None
    assert found.value("$.user.tags[9]") is None


def test_match_value_delimited() -> None:
    found = parse_filter_pattern("[..., request=*.html*, status_code=4*,]").match(
        '127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534'
    )
    assert found is not None
    # AWS's extracted fields for this very example.
    assert found.value("$status_code") == "404"
    assert found.value("$request") == "GET /index.html HTTP/1.0"
    assert [found.value(f"${i}") for i in range(1, 8)] == [
        "127.0.0.1",
        "-",
        "frank",
        "10/Oct/2000:13:25:15 -0700",
        "GET /index.html HTTP/1.0",
        "404",
        "1534",
    ]
    assert found.value("$8") is None
    assert found.value("$0") is None
    assert found.value("$²") is None
    assert found.value("$nope") is None
    assert found.value("status_code") is None


def test_match_value_of_terms_is_none() -> None:
    found = parse_filter_pattern("ERROR").match("ERROR x")
    assert found is not None
    assert found.value("$.a") is None
    assert found.value("$a") is None


# -- check_selector --------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["$.latency", "$.a.b", "$.a[0]", "$.a[1].id", "$.['a.b']"])
def test_check_selector_json_accepts_paths(selector: str) -> None:
    parse_filter_pattern("{ $.x = 1 }").check_selector(selector)


@pytest.mark.parametrize(
    ("selector", "position", "phrase"),
    [
        ("latency", 0, "starting with '$.'"),
        ("$latency", 0, "starting with '$.'"),
        ("$.a[*]", 4, "wildcards are not allowed"),
        ("$.*", 2, "wildcards are not allowed"),
        ("$.a b", 3, "expected the end of the selector"),
        ("$.", 2, "expected a property name"),
        ("$.a[x]", 4, "expected an array index"),
    ],
)
def test_check_selector_json_rejects(selector: str, position: int, phrase: str) -> None:
    with pytest.raises(FilterPatternError) as caught:
        parse_filter_pattern("{ $.x = 1 }").check_selector(selector)
    assert caught.value.position == position
    assert phrase in str(caught.value)


def test_check_selector_delimited() -> None:
    pattern = parse_filter_pattern("[ip, user, ..., status = 4*, bytes]")
    pattern.check_selector("$bytes")
    pattern.check_selector("$ip")
    for bad in ("$nope", "bytes", "$.bytes", "$"):
        with pytest.raises(FilterPatternError) as caught:
            pattern.check_selector(bad)
        assert "$ip, $user, $status, $bytes" in str(caught.value)


@pytest.mark.parametrize("pattern", ["", "ERROR", "%x%"])
def test_check_selector_without_fields(pattern: str) -> None:
    with pytest.raises(LogsError) as caught:
        parse_filter_pattern(pattern).check_selector("$.a")
    assert caught.value.code == "InvalidParameterException"
    assert "has no fields" in str(caught.value)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "position", "phrase"),
    [
        # unbalanced quotes, braces, brackets, parentheses
        ('"abc', 0, "unbalanced '\"'"),
        ('ERROR "abc', 6, "found end of pattern"),
        ("{ $.a = 1", 0, "unbalanced '{': expected '}'"),
        ('{ $.a = "x }', 8, "unbalanced '\"'"),
        ("{ ($.a = 1 }", 11, "expected '&&', '||' or ')', found '}'"),
        ("{ ($.a = 1", 2, "unbalanced '('"),
        ("{ $.a = 1 ) }", 10, "expected '&&', '||' or '}', found ')'"),
        ("[a, b", 0, "unbalanced '[': expected ']'"),
        ("{ $.a[0 = 1 }", 7, "expected ']'"),
        ("{ $.a[0", 5, "unbalanced '['"),
        ("{ $.['a = 1 }", 5, 'unbalanced "\'"'),
        ("%abc", 0, "unbalanced '%'"),
        ("{ $.a = 1 } x", 12, "expected nothing after the closing '}'"),
        ("[a] b", 4, "expected nothing after the closing ']'"),
        # operators
        ("{ $.a == 1 }", 6, "unknown operator '=='"),
        ("{ $.a =! 1 }", 6, "unknown operator '=!'"),
        ("[a <> 1]", 3, "unknown operator '<>'"),
        ("{ $.a LIKE x }", 6, "unknown operator 'LIKE'"),
        ("{ $.a 1 }", 6, "expected an operator"),
        ("{ $.a IS NOT NULL }", 6, "'IS NOT' is not supported"),
        ("{ $.a EXISTS }", 6, "'EXISTS' is not supported"),
        # selectors
        ("{ a = 1 }", 2, "a selector starting with '$.'"),
        ("{ $a = 1 }", 2, "expected a selector starting with '$.', found '$a'"),
        ("{ $. = 1 }", 4, "expected a property name"),
        ("{ $.a[-1] = 1 }", 6, "expected an array index"),
        ("{ $.a[*].b[*] = 1 }", 10, "only one wildcard is allowed in a selector"),
        ("{ $.a[*] = 1 || $.b[*] = 1 || $.c.* = 1 || $.d.* = 1 }", 47, "at most 3 wildcard"),
        # missing operands
        ("{ $.a = 1 && }", 13, "after '&&', found '}'"),
        ("{ $.a = 1 || }", 13, "after '||', found '}'"),
        ("{ && $.a = 1 }", 2, "after '{', found '&'"),
        ("{}", 1, "after '{', found '}'"),
        ("{ () }", 3, "after '(', found ')'"),
        ("{ $.a = }", 8, "expected a value after '=', found '}'"),
        ("{ $.a = 1 & $.b = 2 }", 10, "expected '&&', '||' or '}', found '&'"),
        ("[a = 1 && ]", 10, "expected a condition on 'a' after '&&', found ']'"),
        ("[a = ]", 5, "expected a value after '=', found ']'"),
        # values
        ("{ $.a > abc }", 8, "'>' compares numbers: expected a number, found 'abc'"),
        ('{ $.a <= "5" }', 9, "expected a number"),
        ("{ $.a > 4* }", 8, "expected a number"),
        ("{ $.a < %5% }", 8, "expected a number"),
        ("[a, b > x]", 8, "'>' compares numbers"),
        ("{ $.a = a@b }", 9, "put the value in double quotes"),
        ("{ $.a = $.b }", 8, "unquoted values may contain only"),
        ("{ $.a < %5% }", 8, "expected a number, found %5%"),
        # terms
        ("ERROR:", 5, "put the term in double quotes"),
        ("user@example", 4, "unquoted terms may contain only letters, digits and '_'"),
        ("? ERROR", 1, "expected a term after '?', found a space"),
        ("ERROR -", 7, "expected a term after '-', found end of pattern"),
        ('"a"b', 3, "expected a space after the term"),
        # regex
        ("%something!%", 10, "'!' is not supported in a regex"),
        ("%ab(c)%", 3, "parentheses are not supported"),
        ("%é%", 1, "multi-byte characters are not supported"),
        ("%%", 0, "empty regex"),
        ("%a{x}%", 2, "expected a quantifier"),
        ("%a}%", 2, "'}' without a matching '{'"),
        ("%\\b%", 1, "unsupported escape"),
        ("%\\xZZ%", 1, "expected two hex digits"),
        ("%[abc%", 1, "unbalanced '[' in regex"),
        ("%*a%", 1, "invalid regex: nothing to repeat"),
        ("{ $.a = %x% && $.b = %y% && $.c = %z% }", 34, "at most 2 regexes"),
        # delimited structure
        ("[a,,...,...]", 8, "only one '...'"),
        ("[a, a]", 4, "the field name 'a' is used twice"),
        ("[a = 1 && b = 2]", 10, "must all name that field: expected 'a', found 'b'"),
        ("[1a]", 1, "expected a field name"),
        ("[a b]", 3, "expected an operator"),
        ("{ " + "(" * 60 + "$.a = 1" + ")" * 60 + " }", 52, "nest more than 50 deep"),
    ],
)
def test_errors_say_what_and_where(pattern: str, position: int, phrase: str) -> None:
    caught = error(pattern)
    assert caught.position == position, str(caught)
    assert phrase in str(caught)
    assert caught.code == "InvalidParameterException"
    assert caught.pattern == pattern


def test_error_message_points_at_the_problem() -> None:
    text = str(error("{ $.a > abc }"))
    assert "at position 8" in text
    assert text.endswith("{ $.a > abc }\n          ^")


# -- the API ---------------------------------------------------------------------------


def test_pattern_keeps_its_text_and_kind() -> None:
    for text, kind in [
        ("", "all"),
        ("ERROR", "terms"),
        ("  { $.a = 1 }", "json"),
        ("[a]", "delimited"),
        ("%x%", "terms"),
    ]:
        compiled = parse_filter_pattern(text)
        assert isinstance(compiled, FilterPattern)
        assert (compiled.text, compiled.kind) == (text, kind)
