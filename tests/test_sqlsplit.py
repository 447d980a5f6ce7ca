from __future__ import annotations

from idea_expansion.local import split_statements


def test_splits_on_top_level_semicolons_only() -> None:
    script = """
    -- a comment; with a semicolon
    create table t (x text default 'a;b');
    /* block; /* nested; */ still comment; */
    create function f() returns text language plpgsql as $$ begin return 'x;y'; end; $$;
    create function g() returns text language sql as $body$ select 'p;q' $body$;
    select E'it\\'s; fine', "odd;name" from t;
    select 1
    """
    statements = split_statements(script)
    assert len(statements) == 5
    assert statements[0].endswith("default 'a;b')")
    assert "return 'x;y'; end; $$" in statements[1]
    assert statements[2].endswith("$body$ select 'p;q' $body$")
    assert statements[3].startswith("select E'it")
    assert statements[4] == "select 1"


def test_comment_only_chunks_are_dropped() -> None:
    assert split_statements("-- nothing\n;\n/* still nothing */;") == []


def test_dollar_sign_inside_identifiers_is_not_a_quote() -> None:
    assert split_statements("select a$b$c from t; select 2") == ["select a$b$c from t", "select 2"]
