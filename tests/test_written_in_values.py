"""What the Postgres backend writes into a statement rather than sending as a parameter: a flag or an enum
member marked `literal` (only booleans and lower-case words), and, for a user client, that user's own id as
the policies' `(select auth.uid())`. A statement with no parameter is planned once per connection; the
plans themselves are checked in tests/test_list_plans.py."""

from __future__ import annotations

import enum
import uuid

import pytest

from idea_expansion import InvalidRequestError
from idea_expansion.backends._base import Delete, Eq, Scope, Select, Update
from idea_expansion.backends.postgres import compile_statement

ME = uuid.UUID("00000000-0000-4000-8000-000000000001")
SOMEONE = uuid.UUID("00000000-0000-4000-8000-000000000002")


def test_a_user_clients_own_id_is_auth_uid_and_any_other_id_a_parameter() -> None:
    own = Select("blog_posts", [Eq("user_id", ME)])
    as_me = Scope("authenticated", ME)
    assert compile_statement(own, as_me) == (
        'select * from "public"."blog_posts" where "user_id" = (select auth.uid())',
        [],
    )
    parameter = ('select * from "public"."blog_posts" where "user_id" = %s', [ME])
    for scope in (Scope("service_role"), Scope("anon"), Scope("authenticated", SOMEONE), None):
        assert compile_statement(own, scope) == parameter, scope
    # Only a UUID is taken for the user's id (a string of the same text is a value like any other).
    assert compile_statement(Select("ideas", [Eq("title", str(ME))]), as_me)[1] == [str(ME)]
    # Writes narrowed by the user's id too; any other column's value that happens to be the id as well.
    assert compile_statement(Delete("ideas", [Eq("user_id", ME)]), as_me)[0] == (
        'delete from "public"."ideas" where "user_id" = (select auth.uid()) returning *'
    )
    text, params = compile_statement(Update("ideas", {"title": "t"}, [Eq("user_id", ME)]), as_me)
    assert (text, params) == (
        'update "public"."ideas" set "title" = %s where "user_id" = (select auth.uid()) returning *',
        ["t"],
    )


def test_flags_and_enum_values_are_written_in_and_nothing_else_is() -> None:
    select = Select("ideas", [Eq("status", "archived", literal=True), Eq("is_public", True, literal=True)])
    assert compile_statement(select) == (
        """select * from "public"."ideas" where "status" = 'archived' and "is_public" = true""",
        [],
    )
    assert compile_statement(Select("ideas", [Eq("is_public", False, literal=True)]))[0].endswith('"is_public" = false')

    class Formatted(str):  # checks as "archived", writes itself as something else
        def __format__(self, spec: str) -> str:
            return "x' or true or 'a"

        __str__ = __repr__ = lambda self: "x' or true or 'a"

    class Shouty(str, enum.Enum):  # noqa: UP042 - the mix whose f-string is "Shouty.ARCHIVED"
        ARCHIVED = "archived"

    hostile = [
        "x' or 'a'='a",
        "archived'--",
        "Archived",
        "",
        "a b",
        "é",
        "a" * 64,
        1,
        None,
        ["archived"],
        Formatted("archived"),
        Shouty.ARCHIVED,
    ]
    for value in hostile:
        with pytest.raises(InvalidRequestError, match="not an enum value"):
            compile_statement(Select("ideas", [Eq("status", value, literal=True)]))
    # Unmarked, the same text is a parameter, whatever it holds.
    assert compile_statement(Select("ideas", [Eq("status", "x' or 'a'='a")])) == (
        'select * from "public"."ideas" where "status" = %s',
        ["x' or 'a'='a"],
    )
