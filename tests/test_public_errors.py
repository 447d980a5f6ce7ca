"""Nothing escapes the error tree: every public method, given bad input, raises an `IdeaExpansionError`
(or returns normally, as a listing for an unknown but well-formed id does).

The surface is found by introspection, so that a new resource, operation or parameter is walked without
anyone adding it here: every resource of the sync and the async client (as the service, as a user and
anonymously), the clients' constructors and views, and the pipelines' public methods. Each parameter
gets bad values chosen from its annotation (wrong types, out-of-range numbers, huge and NUL-bearing
strings, malformed and unknown ids, unknown enum values...), with every other parameter given a valid
value from a small real data set (a user with ideas, a finished run with its output and blog post, a
payment, a stored file). Every escape is collected, and the test fails listing them all.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import math
import re
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import BaseModel, SecretStr

from idea_expansion import IdeaExpansion, IdeaExpansionError, Settings
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.pipeline import AsyncPipeline, OfflineProvider, Pipeline
from idea_expansion.resources._base import operation, paginated
from idea_expansion.types.expansions import Evaluation, ExpansionOutcome

from .conftest import migrated_database

JWT_SECRET = "walk-secret-" + "s" * 32
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MILLION = 10**6

# The floor of what the walk must find, so that a broken discovery cannot make it walk (almost) nothing.
RESOURCES = {
    "users",
    "ideas",
    "credentials",
    "executions",
    "outputs",
    "blog_posts",
    "credits",
    "storage",
    "reports",
    "expansions",
}
PIPELINE_METHODS = {"expand", "enqueue", "status", "reap", "publish", "deliver"}
MIN_RESOURCE_METHODS = 50
"""Operations per client view (there are 56 as this is written)."""

# Public methods that take no input worth walking, or whose valid call is not a single call.
LIFECYCLE = {"close", "open", "sync_context"}
"""Releasing or opening the client's pool: no input."""
ENVIRONMENT_BUILDERS = {"from_env", "local"}
"""`**kwargs` forwarded to the constructor (walked there); `local` would start the embedded server."""


# -- bad values ----------------------------------------------------------------------------------------------
def _deep(depth: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(depth):
        nested = {"k": nested}
    return nested


Vector = tuple[str, Callable[[], Any]]


def _vectors(*pairs: tuple[str, Any]) -> list[Vector]:
    """Values are made per call (a list or dict argument must not carry one call's changes to the next)."""
    return [(label, (lambda value=value: value) if not callable(value) else value) for label, value in pairs]


GENERIC = _vectors(
    ("None", None),
    ("object()", lambda: object()),
    ("bytes", b"\x00\xff"),
    ("nested list", lambda: [[["nested"]]]),
    ("int 7", 7),
    ("str 'x'", "x"),
    ("float nan", math.nan),
    ("dict holding an object", lambda: {"a": [object()]}),
)
BY_KIND: dict[str, list[Vector]] = {
    "id": _vectors(
        ("not a uuid", "not-a-uuid"),
        ("empty id", ""),
        ("NUL id", "\x00"),
        ("uuid + NUL", lambda: f"{uuid.uuid4()}\x00"),
        ("million-character id", "7" * MILLION),
        ("unknown uuid text", lambda: str(uuid.uuid4())),
        ("unknown UUID", lambda: uuid.uuid4()),
        ("int 2**200", 2**200),
        ("negative int", -1),
    ),
    "str": _vectors(
        ("empty string", ""),
        ("blank string", "   "),
        ("NUL", "\x00"),
        ("NUL inside", "before\x00after"),
        ("million characters", "x" * MILLION),
        ("lone surrogate", "\ud800"),
        ("unicode", "\u00fcn\u00efc\u00f6d\u00e9 \U0001f389"),
        ("sql", "'; drop table public.users; --"),
        ("int where str", 42),
    ),
    "int": _vectors(
        ("-1", -1),
        ("0", 0),
        ("2**31", 2**31),
        ("2**63", 2**63),
        ("-(2**63)-1", -(2**63) - 1),
        ("10**100", 10**100),
        ("True", True),
        ("1.5", 1.5),
        ("str where int", "1"),
        ("inf", math.inf),
    ),
    "float": _vectors(
        ("-1.0", -1.0),
        ("0.0", 0.0),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("10**400", 10**400),
        ("str where float", "30"),
        ("True", True),
    ),
    "bool": _vectors(("'maybe'", "maybe"), ("2", 2), ("'false'", "false")),
    "enum": _vectors(
        ("unknown value", "video"),
        ("empty value", ""),
        ("wrong case", "BLOG_POST"),
        ("value + NUL", "blog_post\x00"),
        ("million characters", "v" * MILLION),
    ),
    "list": _vectors(
        ("a string", "not a list"),
        ("[None]", lambda: [None]),
        ("[1]", lambda: [1]),
        ("nested", lambda: [["nested"]]),
        ("[million characters]", lambda: ["x" * MILLION]),
        ("[NUL]", lambda: ["\x00"]),
        ("[lone surrogate]", lambda: ["\ud800"]),
        ("100,000 items", lambda: ["ok"] * 100_000),
        ("a tuple", ("t",)),
        ("a set", lambda: {"s"}),
        ("[object()]", lambda: [object()]),
    ),
    "dict": _vectors(
        ("holding an object", lambda: {"k": object()}),
        ("int key", lambda: {1: "v"}),
        ("NUL value", lambda: {"k": "\x00"}),
        ("nan value", lambda: {"k": math.nan}),
        ("lone surrogate", lambda: {"k": "\ud800"}),
        ("nested 100,000 deep", lambda: _deep(100_000)),
        ("a list", lambda: ["not", "a", "dict"]),
    ),
    "timedelta": _vectors(
        ("negative", timedelta(days=-1)),
        ("timedelta.max", timedelta.max),
        ("timedelta.min", timedelta.min),
        ("int seconds", 3600),
        ("str", "1 hour"),
    ),
    "decimal": _vectors(
        ("NaN", "NaN"),
        ("negative", "-5"),
        ("zero", "0"),
        ("1e400", "1e400"),
        ("1e-400", "1e-400"),
        ("a float", 5.0),
        ("three decimals", "5.001"),
        ("Infinity", Decimal("Infinity")),
        ("not a number", "five"),
    ),
    "bytes": _vectors(
        ("str where bytes", "not bytes"),
        ("empty", b""),
        ("list of ints", lambda: [1, 2]),
        ("bytearray", bytearray(PNG)),
    ),
    "path": _vectors(
        ("parent segment", "../escape.png"),
        ("absolute", "/etc/passwd"),
        ("empty segment", "a//b.png"),
        ("backslash", "a\\b.png"),
        ("someone else's folder", lambda: f"{uuid.uuid4()}/x.png"),
        ("a folder", lambda: f"{uuid.uuid4()}"),
    ),
}
MODEL_VECTORS: dict[str, list[Vector]] = {
    # Wrong shapes, and instances built with `model_construct`, which skips validation: the SDK checks
    # what it is handed again before it reaches the database.
    "Evaluation": _vectors(
        ("its fields as a dict", lambda: {"score": 50, "reasoning": "ok"}),
        ("constructed out of range", lambda: Evaluation.model_construct(score=10**100, reasoning="ok")),
        ("constructed with NUL", lambda: Evaluation.model_construct(score=50, reasoning="\x00")),
        ("constructed empty", lambda: Evaluation.model_construct()),
    ),
    "ExpansionOutcome": _vectors(
        ("its fields as a dict", lambda: {"status": "failed", "error_step": "judge", "error_message": "x"}),
        ("constructed with an unknown status", lambda: ExpansionOutcome.model_construct(status="exploded")),
        (
            "constructed with a plain-string stage",
            lambda: ExpansionOutcome.model_construct(status="failed", error_step="judge", error_message="x"),
        ),
        ("constructed completed without content", lambda: ExpansionOutcome.model_construct(status="completed")),
        ("constructed empty", lambda: ExpansionOutcome.model_construct()),
    ),
    "Settings": _vectors(
        ("its fields as a dict", lambda: {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}),
        ("constructed empty", lambda: Settings.model_construct()),
        ("constructed with a plain-text URL", lambda: Settings.model_construct(database_url="postgresql://[bad")),
        ("constructed with a bad key", lambda: Settings.model_construct(encryption_key=SecretStr("\x00"))),
    ),
}
_SCALARS = {"int": "int", "float": "float", "bool": "bool", "str": "str", "bytes": "bytes", "UUID": "id"}


def kinds_of(parameter: inspect.Parameter, namespace: dict[str, Any]) -> set[str]:
    """The kinds of bad value a parameter gets, read from its annotation (a string: the modules use
    `from __future__ import annotations`); names are looked up in the function's module."""
    text = str(parameter.annotation)
    kinds: set[str] = set()
    if parameter.name in ("path", "paths"):
        kinds.add("path")
    if "list[" in text:
        kinds.add("list")
    if "dict[" in text:
        kinds.add("dict")
    scalars = re.sub(r"(list|dict)\[[^\]]*\]", "", text)
    for token in re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", scalars):
        name = token.rsplit(".", 1)[-1]
        if name in _SCALARS:
            kinds.add(_SCALARS[name])
        elif name == "IdLike":
            kinds.update({"id", "str"})
        elif name == "timedelta":
            kinds.add("timedelta")
        elif name == "Decimal":
            kinds.add("decimal")
        else:
            found = namespace.get(name)
            if isinstance(found, type) and issubclass(found, BaseModel):
                kinds.add(f"model:{name}")
            is_enum = isinstance(found, type) and issubclass(found, enum.Enum)
            if is_enum or typing.get_origin(found) is typing.Literal:
                kinds.add("enum")
    return kinds


def vectors_for(parameter: inspect.Parameter, namespace: dict[str, Any]) -> list[Vector]:
    chosen = list(GENERIC)
    for kind in sorted(kinds_of(parameter, namespace)):
        if kind.startswith("model:"):
            model = kind.removeprefix("model:")
            assert model in MODEL_VECTORS, f"{parameter.name}: add bad {model} values to MODEL_VECTORS"
            chosen += MODEL_VECTORS[model]
        else:
            chosen += BY_KIND[kind]
    return chosen


# -- the data set ------------------------------------------------------------------------------------------
@dataclass
class World:
    """A small real data set on a migrated database, and valid values made from it."""

    client: IdeaExpansion
    settings: Settings
    storage_dir: Path
    user_id: uuid.UUID
    email: str
    completed_execution_id: uuid.UUID
    output_id: uuid.UUID
    post_id: uuid.UUID
    slug: str
    receipt_id: uuid.UUID
    path: str
    made: dict[str, int] = field(default_factory=dict)

    def fresh_idea(self) -> uuid.UUID:
        return self.client.for_user(self.user_id).ideas.create(title=f"Idea {uuid.uuid4().hex[:8]}").id

    def running_execution(self) -> uuid.UUID:
        return self.client.expansions.start(self.user_id, idea_id=self.fresh_idea()).execution.id

    def fresh_receipt(self) -> uuid.UUID:
        return self.client.credits.grant(self.user_id, 1, "1.00", f"walk-{uuid.uuid4()}").id


def _fresh_email() -> str:
    return f"walk-{uuid.uuid4().hex[:12]}@example.test"


def valid_values(world: World) -> dict[str, Callable[[], Any]]:
    """A valid value per parameter name (made per call where a call may use it up)."""
    return {
        "user_id": lambda: world.user_id,
        "idea_id": world.fresh_idea,
        "execution_id": lambda: world.completed_execution_id,
        "output_id": lambda: world.output_id,
        "post_id": lambda: world.post_id,
        "receipt_id": world.fresh_receipt,
        "provider": lambda: "github",
        "secret": lambda: "s3cret-value",
        "valid": lambda: True,
        "email": lambda: world.email,
        "login": lambda: "octocat",
        "access_token": lambda: "gho_walk_token",
        "name": lambda: "Ada",
        "timezone": lambda: "Europe/Paris",
        "title": lambda: "An idea worth walking",
        "email_or_id": lambda: str(world.user_id),
        "credits": lambda: 1,
        "amount_usd": lambda: "1.00",
        "reference": lambda: f"walk-{uuid.uuid4()}",
        "slug": lambda: world.slug,
        "stage": lambda: "judge",
        "evaluation": lambda: Evaluation(score=50, reasoning="Worth a try."),
        "outcome": lambda: ExpansionOutcome(status="failed", error_step="judge", error_message="stopped by the walk"),
        "step": lambda: "publish",
        "worker_id": lambda: "walker",
        "path": lambda: world.path,
        "data": lambda: PNG,
        "limit": lambda: 5,
        "stale_after": lambda: timedelta(hours=1),
    }


# Values for one method that differ from (or add to) the valid values by name.
OVERRIDES: dict[str, dict[str, Callable[[World], Any]]] = {
    "users.create": {"email": lambda w: _fresh_email()},
    "users.sign_in_with_github": {"email": lambda w: _fresh_email()},
    "storage.upload": {"path": lambda w: f"{w.user_id}/walk/{uuid.uuid4().hex}.png"},
    "expansions.finish": {"execution_id": lambda w: w.running_execution()},
    "expansions.record_stage": {"execution_id": lambda w: w.running_execution()},
    "expansions.record_evaluation": {"execution_id": lambda w: w.running_execution()},
    # Exactly one of error_message / publication_url: the walk varies the others with a failure.
    "expansions.record_delivery": {"error_message": lambda w: "delivery failed (walk)"},
    "IdeaExpansion": {
        "settings": lambda w: w.settings,
        "backend": lambda w: "postgres",
        "storage_dir": lambda w: w.storage_dir,
    },
    "AsyncIdeaExpansion": {
        "settings": lambda w: w.settings,
        "backend": lambda w: "postgres",
        "storage_dir": lambda w: w.storage_dir,
    },
    # A worker that takes no run (max_runs=0) and stops when idle: the walk never leaves it running.
    "Pipeline.run_worker": {"max_runs": lambda w: 0, "exit_when_idle": lambda w: True, "poll_interval": lambda w: 0},
}
ALWAYS_GIVEN = ("user_id", "idea_id")
"""Given even where optional: the service client needs a user, and a fresh idea keeps runs from colliding."""


@dataclass(frozen=True)
class Target:
    """One public callable: how to reach it and its signature."""

    name: str  # e.g. "ideas.update", "IdeaExpansion", "Pipeline.expand"
    signature: inspect.Signature
    namespace: dict[str, Any]


@dataclass
class Walk:
    """What a walk did: the calls made and the escapes seen."""

    calls: int = 0
    returned: int = 0
    """Calls that returned normally: some must, or the valid values are broken and every call failed early."""
    methods: set[str] = field(default_factory=set)
    escapes: list[str] = field(default_factory=list)

    def record(self, where: str, parameter: str, label: str, exc: BaseException) -> None:
        message = str(exc).replace("\n", " ")[:160]
        self.escapes.append(f"{where}({parameter}={label}): {type(exc).__module__}.{type(exc).__qualname__}: {message}")


def _parameters(signature: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in signature.parameters.values() if p.name not in ("self", "cls")]


def _positional(parameter: inspect.Parameter) -> bool:
    """Passed by position: what cannot be passed by name, and required parameters that may be."""
    if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
        return True
    return parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and parameter.default is inspect.Parameter.empty


def arguments_for(
    target: Target, varied: inspect.Parameter, value: Any, world: World, valid: dict[str, Callable[[], Any]]
) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments: `value` for `varied`, valid values for the rest that are required (or always
    given, or set by an override); positional where the signature requires it."""
    overrides = OVERRIDES.get(target.name, {})
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in _parameters(target.signature):
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter is varied:
            given = value
        elif parameter.name in overrides:
            given = overrides[parameter.name](world)
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif parameter.default is inspect.Parameter.empty or parameter.name in ALWAYS_GIVEN:
            if parameter.name not in valid:
                raise AssertionError(f"no valid value for {target.name}({parameter.name}): add one to valid_values")
            given = valid[parameter.name]()
        else:
            continue
        if _positional(parameter):
            args.append(given)
        else:
            kwargs[parameter.name] = given
    return args, kwargs


def _varied_values(target: Target) -> Iterator[tuple[inspect.Parameter, str, Callable[[], Any]]]:
    for parameter in _parameters(target.signature):
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        for label, make in vectors_for(parameter, target.namespace):
            yield parameter, label, make


async def _settle(result: Any) -> Any:
    """What an async call gives: awaited (a coroutine, or a listing's paginator)."""
    return await result if inspect.isawaitable(result) else result


def walk_target(
    walk: Walk,
    where: str,
    target: Target,
    call: Callable[..., Any],
    world: World,
    valid: dict[str, Callable[[], Any]],
    *,
    finish: Callable[[Any], None] = lambda result: None,
) -> None:
    """Call `call` once per bad value of each parameter; record what escapes."""
    walk.methods.add(where)
    for parameter, label, make in _varied_values(target):
        args, kwargs = arguments_for(target, parameter, make(), world, valid)
        walk.calls += 1
        try:
            finish(call(*args, **kwargs))
            walk.returned += 1
        except IdeaExpansionError:
            pass
        except Exception as exc:
            walk.record(where, parameter.name, label, exc)


async def walk_target_async(
    walk: Walk,
    where: str,
    target: Target,
    call: Callable[..., Any],
    world: World,
    valid: dict[str, Callable[[], Any]],
    *,
    finish: Callable[[Any], Awaitable[None]] | None = None,
) -> None:
    """`walk_target` for the async surface: each call's result is awaited."""
    walk.methods.add(where)
    for parameter, label, make in _varied_values(target):
        args, kwargs = arguments_for(target, parameter, make(), world, valid)
        walk.calls += 1
        try:
            result = await _settle(call(*args, **kwargs))
            if finish is not None:
                await finish(result)
            walk.returned += 1
        except IdeaExpansionError:
            pass
        except Exception as exc:
            walk.record(where, parameter.name, label, exc)


# -- discovery -------------------------------------------------------------------------------------------------
def resource_names(client_class: type) -> list[str]:
    """The client's resources: its cached properties."""
    return sorted(name for name, attr in vars(client_class).items() if isinstance(attr, functools.cached_property))


def resource_targets(resource: object, resource_name: str) -> list[Target]:
    """Every public method of a resource: its operations and listings (their generator's signature) and
    any plain method."""
    targets = []
    for name in dir(type(resource)):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(type(resource), name)
        if isinstance(attr, operation | paginated):
            function = attr.__wrapped__  # type: ignore[union-attr]
        elif inspect.isfunction(attr):
            function = attr
        else:
            continue
        targets.append(Target(f"{resource_name}.{name}", inspect.signature(function), function.__globals__))
    return targets


def method_targets(owner: type, prefix: str, *, skip: set[str]) -> list[Target]:
    """The public methods of a class (the clients' views, the pipelines), by their signatures."""
    targets = []
    for name in dir(owner):
        if name.startswith("_") or name in skip:
            continue
        attr = inspect.getattr_static(owner, name)
        function = attr.__func__ if isinstance(attr, classmethod | staticmethod) else attr
        if inspect.isfunction(function):
            targets.append(Target(f"{prefix}.{name}", inspect.signature(function), function.__globals__))
    return targets


def constructor_target(owner: type) -> Target:
    init = owner.__init__  # type: ignore[misc]
    return Target(owner.__name__, inspect.signature(init), init.__globals__)


# -- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def walk_database(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A database of this module's own: the walk writes (ideas, runs, grants) and reaps every stale run."""
    return migrated_database(fresh_database, project, prefix="ie_walk", seed=False)


@pytest.fixture(scope="module")
def world(walk_database: str, encryption_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    storage_dir = tmp_path_factory.mktemp("walk-storage")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, DATABASE_URL=walk_database, ENCRYPTION_KEY=encryption_key, SUPABASE_JWT_SECRET=JWT_SECRET
    )
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=storage_dir) as client:
        email = _fresh_email()
        user = client.users.create(email=email, name="Walker")
        receipt = client.credits.grant(user.id, 100_000, "1000.00", "walk-credits")
        client.credentials.set("github", "gho_walk_token", user_id=user.id)
        me = client.for_user(user.id)
        idea = me.ideas.create(title="A CLI that explains regexes", bullets=["parse", "explain"])
        with Pipeline(client, provider=OfflineProvider()) as pipeline:
            done = pipeline.expand(user.id, idea_id=idea.id, format="blog_post", public=True)
        assert done.output is not None
        assert done.blog_post is not None
        path = f"{user.id}/walk/card.png"
        me.storage.upload(path, PNG)
        yield World(
            client=client,
            settings=settings,
            storage_dir=storage_dir,
            user_id=user.id,
            email=email,
            completed_execution_id=done.execution.id,
            output_id=done.output.id,
            post_id=done.blog_post.id,
            slug=done.blog_post.slug,
            receipt_id=receipt.id,
            path=path,
        )


def _user_token(user_id: uuid.UUID) -> str:
    claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "exp": 4_102_444_800}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _report(walk: Walk, what: str) -> str:
    return (
        f"{what}: {len(walk.methods)} methods, {walk.calls} calls ({walk.returned} returned normally), "
        f"{len(walk.escapes)} escapes"
    )


def _assert_no_escape(walk: Walk, what: str) -> None:
    print(_report(walk, what))
    assert walk.returned > 0, f"{_report(walk, what)}: no call returned; are the valid values still valid?"
    if walk.escapes:
        pytest.fail(f"{_report(walk, what)}:\n" + "\n".join(walk.escapes), pytrace=False)


# -- the walks --------------------------------------------------------------------------------------------------
def test_the_discovered_surface_is_the_whole_surface(world: World) -> None:
    # Guard the discovery itself: if introspection stopped finding operations, the walks below would
    # pass by walking nothing.
    for client_class in (IdeaExpansion, AsyncIdeaExpansion):
        assert set(resource_names(client_class)) >= RESOURCES, client_class
    resources = [resource_targets(getattr(world.client, name), name) for name in resource_names(IdeaExpansion)]
    assert sum(map(len, resources)) >= MIN_RESOURCE_METHODS
    assert all(resources), "a resource without a public method"
    pipeline_methods = {t.name.split(".")[1] for t in method_targets(Pipeline, "Pipeline", skip=LIFECYCLE)}
    assert pipeline_methods >= PIPELINE_METHODS
    async_methods = {t.name.split(".")[1] for t in method_targets(AsyncPipeline, "AsyncPipeline", skip=LIFECYCLE)}
    assert async_methods >= {"expand", "enqueue", "status", "reap"}
    # Every parameter of every operation gets bad values of its own kind, not only the generic ones.
    for targets in resources:
        for target in targets:
            for parameter in _parameters(target.signature):
                assert kinds_of(parameter, target.namespace), f"{target.name}({parameter.name}) has no kind"


def _views(client: Any, user_id: uuid.UUID) -> dict[str, Any]:
    return {"service": client, "user": client.for_user(user_id), "anon": client.anonymous()}


def test_no_resource_method_of_the_sync_client_raises_outside_the_tree(world: World) -> None:
    walk, valid = Walk(), valid_values(world)
    for view_name, view in _views(world.client, world.user_id).items():
        for resource_name in resource_names(IdeaExpansion):
            resource = getattr(view, resource_name)
            for target in resource_targets(resource, resource_name):
                method = getattr(resource, target.name.split(".")[1])
                walk_target(walk, f"sync {view_name} {target.name}", target, method, world, valid)
    assert len(walk.methods) >= 3 * MIN_RESOURCE_METHODS
    _assert_no_escape(walk, "sync client")


def test_no_resource_method_of_the_async_client_raises_outside_the_tree(world: World) -> None:
    walk, valid = Walk(), valid_values(world)

    async def main() -> None:
        async with AsyncIdeaExpansion(
            settings=world.settings, backend="postgres", storage_dir=world.storage_dir
        ) as client:
            for view_name, view in _views(client, world.user_id).items():
                for resource_name in resource_names(AsyncIdeaExpansion):
                    resource = getattr(view, resource_name)
                    for target in resource_targets(resource, resource_name):
                        method = getattr(resource, target.name.split(".")[1])
                        await walk_target_async(walk, f"async {view_name} {target.name}", target, method, world, valid)

    asyncio.run(main())
    assert len(walk.methods) >= 3 * MIN_RESOURCE_METHODS
    _assert_no_escape(walk, "async client")


def test_no_constructor_or_view_of_the_clients_raises_outside_the_tree(world: World) -> None:
    walk, valid = Walk(), valid_values(world)
    walk_target(
        walk,
        "IdeaExpansion()",
        constructor_target(IdeaExpansion),
        IdeaExpansion,
        world,
        valid,
        finish=lambda client: client.close(),
    )
    skip = LIFECYCLE | ENVIRONMENT_BUILDERS
    for target in method_targets(IdeaExpansion, "IdeaExpansion", skip=skip):
        method = getattr(world.client, target.name.split(".")[1])
        walk_target(walk, f"sync {target.name}", target, method, world, valid)

    async def main() -> None:
        async def closed(client: AsyncIdeaExpansion) -> None:
            try:
                await client.open()  # a bad argument may only show when connecting
            finally:
                await client.close()

        await walk_target_async(
            walk,
            "AsyncIdeaExpansion()",
            constructor_target(AsyncIdeaExpansion),
            AsyncIdeaExpansion,
            world,
            valid,
            finish=closed,
        )
        async with AsyncIdeaExpansion(
            settings=world.settings, backend="postgres", storage_dir=world.storage_dir
        ) as aio:
            for target in method_targets(AsyncIdeaExpansion, "AsyncIdeaExpansion", skip=skip):
                method = getattr(aio, target.name.split(".")[1])
                await walk_target_async(walk, f"async {target.name}", target, method, world, valid)

    asyncio.run(main())
    # A good token still makes a view (the walk did not pass because every call failed).
    assert world.client.for_access_token(_user_token(world.user_id)).scope.user_id == world.user_id
    _assert_no_escape(walk, "client constructors and views")


def _used_and_closed(pipeline: Pipeline) -> None:
    """A pipeline a walked call made: used once (a bad value it only kept shows), then closed."""
    try:
        pipeline.reap()
    finally:
        pipeline.close()


def test_no_pipeline_method_raises_outside_the_tree(world: World) -> None:
    walk, valid = Walk(), valid_values(world) | {"client": lambda: world.client}
    walk_target(walk, "Pipeline()", constructor_target(Pipeline), Pipeline, world, valid, finish=_used_and_closed)
    with Pipeline(world.client, provider=OfflineProvider()) as pipeline:
        for target in method_targets(Pipeline, "Pipeline", skip=LIFECYCLE):
            name = target.name.split(".")[1]
            finish = _used_and_closed if name == "from_settings" else (lambda result: None)
            walk_target(walk, target.name, target, getattr(pipeline, name), world, valid, finish=finish)

    async def main() -> None:
        async with AsyncIdeaExpansion(
            settings=world.settings, backend="postgres", storage_dir=world.storage_dir
        ) as aio:
            async_valid = valid | {"client": lambda: aio}

            async def closed(made: AsyncPipeline) -> None:
                try:
                    await made.reap()  # builds its sync pipeline: what the constructor kept is used
                finally:
                    await made.close()

            await walk_target_async(
                walk,
                "AsyncPipeline()",
                constructor_target(AsyncPipeline),
                AsyncPipeline,
                world,
                async_valid,
                finish=closed,
            )
            async with AsyncPipeline(aio, provider=OfflineProvider()) as pipeline:
                for target in method_targets(AsyncPipeline, "AsyncPipeline", skip=LIFECYCLE):
                    method = getattr(pipeline, target.name.split(".")[1])
                    await walk_target_async(walk, target.name, target, method, world, async_valid)

    asyncio.run(main())
    # The pipeline still runs after the walk (a run that ended in a PipelineError for every call would
    # hide escapes behind it).
    with Pipeline(world.client, provider=OfflineProvider()) as pipeline:
        assert pipeline.expand(world.user_id, idea_id=world.fresh_idea(), format="twitter_thread").output is not None
    _assert_no_escape(walk, "pipelines")
