"""A corpus of archives that each change ONE object class of a signer database.

Every case keeps the database a signer database (same tables, same migrations, same data)
and changes one thing the old deny-list never looked at: a function body behind the same
name, a forced RLS policy, an index expression, a default, a constraint… Each must make the
drill's schema identity fail, naming the object (tests/test_schema_identity.py).

The base database is the generated signer DB, which has the signer's four functions with
bodies of our own writing (devtools/signer_schema.sql), so a body can be swapped behind a
real name and signature. Variants are copies of it (CREATE DATABASE … TEMPLATE: cheap) changed by the
case's statements; plain-only cases are text appended to a clean plain dump (what only a
hand-crafted SQL file can hold: ALTER ROLE … SET, DO blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

# A migration level no signer release has: the shipped table never vouches for the corpus
# (its generated schema is not the real one), only the pinned live reference does.
TEST_ONLY_MIGRATION = (
    "INSERT INTO public.__sbtc_migrations (key) VALUES ('9999__sbtc_ops_test_only_level.sql')"
)


@dataclass(frozen=True)
class Case:
    name: str
    statements: tuple[str, ...]  # run on a copy of the base DB (as superuser)
    names: tuple[str, ...]  # what the identity check must name (substrings of its detail)
    plain_only: str | None = None  # SQL appended to a clean plain dump instead


CASES: tuple[Case, ...] = (
    Case(
        "function-body",
        (
            "CREATE OR REPLACE FUNCTION sbtc_signer.bitcoin_blockchain_of(chain_tip bytea, "
            "max_depth integer) RETURNS TABLE (block_hash bytea, parent_hash bytea, "
            "block_height bigint) LANGUAGE plpgsql SECURITY DEFINER AS $fn$ BEGIN "
            "COPY (SELECT 1) TO PROGRAM 'id'; RETURN QUERY SELECT b.block_hash, b.parent_hash, "
            "b.block_height FROM sbtc_signer.bitcoin_blocks b WHERE b.block_hash = chain_tip "
            "LIMIT max_depth; END $fn$",
        ),
        ("changed function sbtc_signer.bitcoin_blockchain_of(bytea,integer)",),
    ),
    Case(
        "rls-policy",
        (
            "ALTER TABLE sbtc_signer.dkg_shares ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE sbtc_signer.dkg_shares FORCE ROW LEVEL SECURITY",
            "CREATE POLICY hide_failed ON sbtc_signer.dkg_shares "
            "USING (dkg_shares_status <> 'failed')",
        ),
        ("added policy hide_failed ON sbtc_signer.dkg_shares", "changed table sbtc_signer.dkg"),
    ),
    Case(
        "index-expression",
        (
            "CREATE INDEX dkg_shares_hex ON sbtc_signer.dkg_shares "
            "((pg_catalog.encode(aggregate_key, 'hex')))",
        ),
        ("added index sbtc_signer.dkg_shares_hex",),
    ),
    Case(
        "column-default",
        (
            "ALTER TABLE sbtc_signer.p2p_peers ALTER COLUMN last_dialed_at "
            "SET DEFAULT pg_catalog.clock_timestamp()",
        ),
        ("changed column sbtc_signer.p2p_peers.last_dialed_at",),
    ),
    Case(
        "check-constraint",
        (
            "ALTER TABLE sbtc_signer.dkg_shares ADD CONSTRAINT threshold_bound "
            "CHECK (signature_share_threshold < 100000)",
        ),
        ("added constraint sbtc_signer.dkg_shares.threshold_bound",),
    ),
    Case(
        "domain-constraint",
        ("CREATE DOMAIN public.small_count AS integer CONSTRAINT small CHECK (VALUE < 10)",),
        ("added domain constraint public.small_count.small", "added type public.small_count"),
    ),
    Case(
        "virtual-generated-column",
        (
            "ALTER TABLE sbtc_signer.dkg_shares ADD COLUMN key_hex text GENERATED ALWAYS AS "
            "(pg_catalog.encode(aggregate_key, 'hex')) VIRTUAL",
        ),
        ("added column sbtc_signer.dkg_shares.key_hex",),
    ),
    Case(
        "function-overload",
        (
            "CREATE FUNCTION sbtc_signer.bitcoin_blockchain_of(chain_tip text) RETURNS integer "
            "LANGUAGE sql AS 'SELECT 1'",
        ),
        ("added function sbtc_signer.bitcoin_blockchain_of(text)",),
    ),
    Case(
        "cast",
        (
            "CREATE TYPE public.tag AS ENUM ('a')",
            "CREATE FUNCTION public.tag_bytes(public.tag) RETURNS bytea LANGUAGE sql IMMUTABLE "
            "AS $fn$ SELECT '\\x00'::bytea $fn$",
            "CREATE CAST (public.tag AS bytea) WITH FUNCTION public.tag_bytes(public.tag)",
        ),
        ("added cast (public.tag AS bytea)",),
    ),
    Case(
        "operator",
        (
            "CREATE FUNCTION public.bytes_eq(bytea, bytea) RETURNS boolean LANGUAGE sql "
            "IMMUTABLE AS 'SELECT $1 = $2'",
            "CREATE OPERATOR public.=== (LEFTARG = bytea, RIGHTARG = bytea, "
            "FUNCTION = public.bytes_eq)",
        ),
        ("added operator public.===(bytea,bytea)",),
    ),
    Case(
        "collation",
        ("CREATE COLLATION public.c_copy (provider = libc, locale = 'C')",),
        ("added collation public.c_copy",),
    ),
    Case(
        "text-search-config",
        ("CREATE TEXT SEARCH CONFIGURATION public.signer_ts (COPY = pg_catalog.simple)",),
        ("added text search configuration public.signer_ts",),
    ),
    Case(
        "extended-statistics",
        (
            "CREATE STATISTICS sbtc_signer.dkg_stats (ndistinct) ON dkg_shares_status, "
            "signature_share_threshold FROM sbtc_signer.dkg_shares",
        ),
        ("added statistics sbtc_signer.dkg_stats",),
    ),
    Case(
        "large-object",
        ("SELECT pg_catalog.lo_from_bytea(0, '\\x00'::bytea)",),
        ("changed large objects",),
    ),
    Case(
        "comment",
        ("COMMENT ON TABLE sbtc_signer.dkg_shares IS 'see public.helper'",),
        ("added comment on table sbtc_signer.dkg_shares",),
    ),
    Case(
        "extra-sequence",
        ("CREATE SEQUENCE public.extra_seq",),
        ("added sequence public.extra_seq",),
    ),
    Case(
        "extra-table",
        ("CREATE TABLE public.extra_table (id integer)",),
        ("added table public.extra_table",),
    ),
    Case(
        "alter-role-set",
        (),
        # Read and reset by the drill before the checks (verify/dbfacts.py), then reported.
        ("added role sbtc_ops_restore setting search_path",),
        plain_only="ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;",
    ),
    Case(
        "do-block",
        (),
        ("added function public.from_do()",),
        plain_only=(
            "DO $do$ BEGIN EXECUTE 'CREATE FUNCTION public.from_do() RETURNS integer "
            "LANGUAGE sql AS ''SELECT 1'''; END $do$;"
        ),
    ),
)
BY_NAME = {case.name: case for case in CASES}
CATALOG_CASES = [case.name for case in CASES if case.plain_only is None]
PLAIN_ONLY_CASES = [case.name for case in CASES if case.plain_only is not None]
