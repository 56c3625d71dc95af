"""Event bus resource policies: who, besides the bus's own account, may put
events on a bus or put rules on it.

A policy is the IAM document EventBridge keeps on a bus (``DescribeEventBus``'s
``Policy``): ``PutPermission`` adds or replaces one statement by its
``StatementId`` (``put_statement``), or replaces the whole document;
``RemovePermission`` removes one statement or all of them.

``BusPolicy.allows`` answers one question: may ``account`` (in organization
``org``) perform ``action`` on this bus? The bus's own account always may and
is never asked about. For any other account an explicit ``Deny`` wins, then
an ``Allow`` is needed. The engine asks for ``events:PutEvents`` (every
entry point of events, and a bus forwarding to another bus) and
``events:PutRule``; a document may name the other EventBridge actions too
(AWS accepts them: ``events:ListRules`` in AWS's recorded answers) and they are
kept and shown, not enforced, since no caller of another account reaches them
here.

What a caller is: an account (the endpoint maps each access key to one), with
the organization its key is configured with. A statement's principal matches
``*``, ``{"AWS": "*"}``, the 12-digit account, or its root
(``arn:aws:iam::ACCOUNT:root``); an IAM role or user ARN and a ``Service``
principal are accepted in a document but match no caller (callers here are
accounts, not roles or services).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.errors import CodedError, ConfigError, Problems, Where
from pipelines.settings import Shape

VERSION = "2012-10-17"
PUT_EVENTS = "events:PutEvents"
PUT_RULE = "events:PutRule"
#: AWS: "The permission policy on the event bus cannot exceed 10 KB in size."
MAX_POLICY_BYTES = 10 * 1024
_ACCOUNT = re.compile(r"\d{12}")
_ACCOUNT_ARN = re.compile(r"arn:aws[\w-]*:iam::(\d{12}):(root|role/.+|user/.+|assumed-role/.+)")
_STATEMENT_ID = re.compile(r"[a-zA-Z0-9-_]{1,64}")
_ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
_STATEMENT_KEYS = {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
#: The condition operators evaluated (with ``IfExists`` forms), by how they compare.
_OPERATORS = {
    "StringEquals": (False, False),
    "StringNotEquals": (True, False),
    "StringEqualsIgnoreCase": (False, False),
    "StringNotEqualsIgnoreCase": (True, False),
    "StringLike": (False, True),
    "StringNotLike": (True, True),
    "ArnEquals": (False, False),
    "ArnNotEquals": (True, False),
    "ArnLike": (False, True),
    "ArnNotLike": (True, True),
}


class PolicyLengthExceeded(CodedError):
    """A policy over ``MAX_POLICY_BYTES`` (AWS's PolicyLengthExceededException)."""

    def __init__(self, size: int) -> None:
        super().__init__(
            "PolicyLengthExceededException",
            f"The event bus policy is too long: {size} bytes, over the limit of"
            f" {MAX_POLICY_BYTES} bytes.",
        )


@functools.cache
def event_actions() -> frozenset[str]:
    """Every EventBridge action a policy may name, lower-cased: ``events:`` and
    an operation of botocore's events model (IAM compares actions without case)."""
    import botocore.loaders  # only when a policy is read: the engine may run without it

    model = botocore.loaders.create_loader().load_service_model("events", "service-2")
    return frozenset(f"events:{name}".lower() for name in model["operations"])


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: an account, its organization if known, and for a
    ``PutEvents`` the entry's source and detail-type and the rule forwarding it."""

    account: str
    org: str | None = None
    source: str | None = None
    detail_type: str | None = None
    source_arn: str | None = None

    def value(self, key: str) -> str | None:
        """The caller's value of a condition key (lower-cased), None if it has none."""
        return {
            "aws:principalorgid": self.org,
            "aws:principalaccount": self.account,
            "aws:sourceaccount": self.account if self.source_arn else None,
            "aws:sourcearn": self.source_arn,
            "events:source": self.source,
            "events:detail-type": self.detail_type,
            "events:creatoraccount": self.account,
        }.get(key)


def _strings(where: Where, value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ConfigError(where, f"{what}: a string or a list of strings")
    return items


def _check_principal(where: Where, principal: Any) -> None:
    if principal == "*":
        return
    if not isinstance(principal, Mapping) or not principal:
        raise ConfigError(
            where,
            'a principal is "*" or a mapping {"AWS": ACCOUNT | ARN | "*"} (or "Service")',
        )
    for kind, value in principal.items():
        if kind == "AWS":
            for index, name in enumerate(_strings(where / kind, value, "AWS principals")):
                if not (name == "*" or _ACCOUNT.fullmatch(name) or _ACCOUNT_ARN.fullmatch(name)):
                    at = where / kind / index if isinstance(value, list) else where / kind
                    raise ConfigError(
                        at,
                        f"{name!r} is not a principal: a 12-digit account, an IAM ARN"
                        " (arn:aws:iam::ACCOUNT:root) or *",
                    )
        elif kind == "Service":
            _strings(where / kind, value, "Service principals")
        else:
            raise ConfigError(
                where / kind, f"unknown principal type {kind!r}: AWS or Service are taken"
            )


def _check_action(where: Where, action: Any) -> None:
    known = event_actions()
    for index, name in enumerate(_strings(where, action, "Action")):
        lowered = name.lower()
        at = where / index if isinstance(action, list) else where
        if not lowered.startswith("events:"):
            raise ConfigError(at, f"{name!r} is not an EventBridge action (events:...)")
        if "*" in lowered or "?" in lowered:
            if not any(_like(candidate, lowered) for candidate in known):
                raise ConfigError(at, f"{name!r} matches no EventBridge action")
        elif lowered not in known:
            raise ConfigError(at, f"{name!r} is not an EventBridge action")


def _check_condition(where: Where, condition: Any) -> None:
    if not isinstance(condition, Mapping):
        raise ConfigError(where, "a condition maps operators to {key: value(s)}")
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise ConfigError(
                where / operator,
                f"unknown condition operator {operator!r} (taken: {', '.join(_OPERATORS)},"
                " each also with IfExists)",
            )
        if not isinstance(tests, Mapping) or not tests:
            raise ConfigError(where / operator, "maps condition keys to a value or values")
        for key, values in tests.items():
            _strings(where / operator / key, values, "condition values")


def check_statement(where: Where, statement: Any) -> None:
    """Raise ``ConfigError`` at the first part of ``statement`` AWS would refuse
    (or that this cannot evaluate: NotPrincipal, NotAction, NotResource)."""
    if not isinstance(statement, Mapping):
        raise ConfigError(where, "a statement is a mapping with Effect, Principal, Action")
    for key in statement:
        if key not in _STATEMENT_KEYS:
            raise ConfigError(
                where / key,
                f"{key!r} is not taken in a bus policy statement"
                f" (taken: {', '.join(sorted(_STATEMENT_KEYS))})",
            )
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise ConfigError(where / "Effect", "Effect is Allow or Deny")
    if "Sid" in statement and not isinstance(statement["Sid"], str):
        raise ConfigError(where / "Sid", "Sid is a string")
    for key in ("Principal", "Action"):
        if key not in statement:
            raise ConfigError(where / key, f"a statement needs {key}")
    _check_principal(where / "Principal", statement["Principal"])
    _check_action(where / "Action", statement["Action"])
    if "Resource" in statement:
        _strings(where / "Resource", statement["Resource"], "Resource")
    if "Condition" in statement:
        _check_condition(where / "Condition", statement["Condition"])


def check_document(where: Where, document: Any) -> dict[str, Any]:
    """A policy document (a mapping or its JSON text) checked, as a mapping."""
    if isinstance(document, str):
        try:
            document = orjson.loads(document)
        except orjson.JSONDecodeError as error:
            raise ConfigError(where, f"the policy is not JSON: {error}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(where, "a policy is a mapping with Version and Statement")
    for key in document:
        if key not in ("Version", "Id", "Statement"):
            raise ConfigError(where / key, f"{key!r} is not taken (Version, Id, Statement)")
    if document.get("Version", VERSION) not in (VERSION, "2008-10-17"):
        raise ConfigError(where / "Version", "Version is 2012-10-17 (or 2008-10-17)")
    statements = document.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise ConfigError(where / "Statement", "a policy needs a list of statements")
    sids: set[str] = set()
    problems = Problems()  # every statement's first problem, not only the first's
    for index, statement in enumerate(statements):
        with problems:
            check_statement(where / "Statement" / index, statement)
            sid = statement.get("Sid")
            if sid in sids:
                raise ConfigError(where / "Statement" / index / "Sid", f"Sid {sid!r} is repeated")
            if sid:
                sids.add(sid)
    problems.raise_any()
    found = dict(document)
    found["Statement"] = [dict(statement) for statement in statements]
    return found


def permission_statement(
    bus_arn: str,
    *,
    statement_id: Any,
    principal: Any,
    action: Any = PUT_EVENTS,
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The statement ``PutPermission`` with these parameters adds, as AWS writes it
    (an account principal becomes its root ARN; the condition, StringEquals)."""
    where = Where("PutPermission")
    if not isinstance(statement_id, str) or not _STATEMENT_ID.fullmatch(statement_id):
        raise ConfigError(
            where / "StatementId", "StatementId is 1 to 64 letters, digits, '-' and '_'"
        )
    if action != PUT_EVENTS:
        raise ConfigError(where / "Action", f"Action must be {PUT_EVENTS}, not {action!r}")
    if not isinstance(principal, str) or not (principal == "*" or _ACCOUNT.fullmatch(principal)):
        raise ConfigError(
            where / "Principal", f'Principal is a 12-digit account or "*", not {principal!r}'
        )
    statement: dict[str, Any] = {
        "Sid": statement_id,
        "Effect": "Allow",
        "Principal": "*" if principal == "*" else {"AWS": f"arn:aws:iam::{principal}:root"},
        "Action": PUT_EVENTS,
        "Resource": bus_arn,
    }
    if condition:
        kind, key, value = (condition.get(k) for k in ("Type", "Key", "Value"))
        if kind != "StringEquals" or key != "aws:PrincipalOrgID":
            raise ConfigError(
                where / "Condition",
                "Condition is {Type: StringEquals, Key: aws:PrincipalOrgID, Value: ORG_ID}",
            )
        if not isinstance(value, str) or not _ORG_ID.fullmatch(value):
            raise ConfigError(where / "Condition" / "Value", f"{value!r} is not an organization id")
        if principal != "*":
            raise ConfigError(where / "Principal", 'a Condition needs Principal "*"')
        statement["Condition"] = {"StringEquals": {key: value}}
    return statement


class BusPolicy:
    """A bus's policy document (or none), with the questions asked of it."""

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        self.document: dict[str, Any] | None = dict(document) if document else None

    @classmethod
    def parse(cls, where: Where, given: Any) -> BusPolicy:
        """A policy from a document (a mapping or JSON text), checked; an empty
        one (None) is no policy."""
        if given is None:
            return cls()
        policy = cls(check_document(where, given))
        policy.check_size()
        return policy

    @property
    def statements(self) -> list[dict[str, Any]]:
        return list(self.document["Statement"]) if self.document else []

    def text(self) -> str | None:
        """The document as ``DescribeEventBus`` answers it (JSON), None without one."""
        return orjson.dumps(self.document).decode() if self.document else None

    def check_size(self) -> None:
        text = self.text()
        if text is not None and len(text.encode()) > MAX_POLICY_BYTES:
            raise PolicyLengthExceeded(len(text.encode()))

    def with_statement(self, statement: Mapping[str, Any]) -> BusPolicy:
        """This policy with ``statement`` added, or replacing the one of its Sid."""
        kept = [s for s in self.statements if s.get("Sid") != statement.get("Sid")]
        made = BusPolicy({"Version": VERSION, "Statement": [*kept, dict(statement)]})
        made.check_size()
        return made

    def without(self, statement_id: str) -> BusPolicy:
        """This policy without the statement ``statement_id`` (AWS's
        ResourceNotFoundException when it has none of that id)."""
        kept = [s for s in self.statements if s.get("Sid") != statement_id]
        if len(kept) == len(self.statements):
            raise CodedError(
                "ResourceNotFoundException", "Statement with the provided id does not exist."
            )
        return BusPolicy({**(self.document or {}), "Statement": kept} if kept else None)

    def allows(self, caller: Caller, action: str, resources: Sequence[str]) -> bool:
        """Whether this policy lets ``caller`` (of another account than the
        bus's) perform ``action`` on one of ``resources`` (the bus's ARN, and
        for a rule operation the rule's)."""
        allowed = False
        for statement in self.statements:
            if not _applies(statement, caller, action, resources):
                continue
            if statement["Effect"] == "Deny":
                return False
            allowed = True
        return allowed


def access_denied(account: str, action: str, resource: str) -> str:
    """AWS's wording of a refusal by resource policy, for the caller's account root."""
    return (
        f"User: arn:aws:iam::{account}:root is not authorized to perform: {action}"
        f" on resource: {resource} because no resource-based policy allows the"
        f" {action} action"
    )


def _applies(
    statement: Mapping[str, Any], caller: Caller, action: str, resources: Sequence[str]
) -> bool:
    return (
        _principal_matches(statement["Principal"], caller.account)
        and _any_like(statement["Action"], [action.lower()], lower=True)
        and ("Resource" not in statement or _any_like(statement["Resource"], resources))
        and _conditions_hold(statement.get("Condition") or {}, caller)
    )


def _principal_matches(principal: Any, account: str) -> bool:
    if principal == "*":
        return True
    names = principal.get("AWS", [])
    for name in names if isinstance(names, list) else [names]:
        if name in ("*", account, f"arn:aws:iam::{account}:root"):
            return True
    return False


def _any_like(patterns: Any, values: Sequence[str], *, lower: bool = False) -> bool:
    for pattern in patterns if isinstance(patterns, list) else [patterns]:
        wanted = pattern.lower() if lower else pattern
        if any(_like(value, wanted) for value in values):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one; nothing else is special."""
    return re.compile(".*".join(".".join(map(re.escape, p.split("?"))) for p in pattern.split("*")))


def _like(value: str, pattern: str) -> bool:
    return value == pattern or _glob(pattern).fullmatch(value) is not None


def _conditions_hold(condition: Mapping[str, Any], caller: Caller) -> bool:
    for operator, tests in condition.items():
        if_exists = operator.endswith("IfExists")
        negated, like = _OPERATORS[operator.removesuffix("IfExists")]
        ignore_case = "IgnoreCase" in operator
        for key, expected in tests.items():
            value = caller.value(key.lower())
            if value is None:
                # IAM: a missing key satisfies IfExists and negated operators only.
                if not (if_exists or negated):
                    return False
                continue
            wanted = expected if isinstance(expected, list) else [expected]
            if ignore_case:
                value, wanted = value.lower(), [w.lower() for w in wanted]
            found = any(_like(value, w) for w in wanted) if like else value in wanted
            if found == negated:
                return False
    return True


#: A source's ``account`` setting (MQTT, webhooks): the account its events are
#: put as, checked against the policies of buses of other accounts.
ACCOUNT_SETTING = Shape(
    {"type": "string", "pattern": "^[0-9]{12}$"},
    "the account its events are put as (default: the runner's own)",
)


def source_caller(where: Where, config: Mapping[str, Any]) -> Caller | None:
    """The caller a source puts as by its ``account`` setting (None: the runner's own)."""
    account = config.get("account")
    if account is None:
        return None
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ConfigError(where / "account", f"{account!r} is not a 12-digit account")
    return Caller(account)


def policy_text(document: Mapping[str, Any] | None) -> str:
    """A document as stored: JSON text (empty for none)."""
    return orjson.dumps(document).decode() if document else ""
