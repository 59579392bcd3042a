"""Schema identity: a database's whole non-system catalog in an order-independent form.

`read_canonical_schema` turns every object a database holds (schemas, tables and columns,
constraints, indexes, sequences, views, functions, types, casts, operators, collations, text
search objects, policies, triggers, rules, extensions, publications, foreign objects,
statistics objects, large objects, comments, settings…) into `kind identity → definition`,
where the definition is what PostgreSQL itself deparses (pg_get_indexdef, pg_get_expr, …)
or the catalog's own columns, as canonical JSON. Two databases with the same schema give the
same objects and the same digest, whatever their OIDs, creation order, server version (15 to
18) or dump format; any change of a body, a default, a flag or an extra object changes it.

Left out on purpose: owners and privileges (they differ per deployment; a restore sbtc-ops
makes does not restore them), data (sequence values, row contents), extension versions and
collation versions (they depend on the server, not on the schema).

Reading is bounded: at most MAX_OBJECTS objects, each definition at most MAX_DEFINITION
characters (a longer one is cut and its SHA-256 appended, so it still compares exactly);
more objects than the cap is itself recorded as an object no reference holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

# The drill's own schema and its amcheck extension (verify/drill.py); never the backup's.
DRILL_SCHEMA = "sbtc_ops_amcheck"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
MAX_OBJECTS = 20_000
MAX_DEFINITION = 64 * 1024
OVER_CAP_KEY = "limit objects"
# Objects initdb creates have OIDs below this (FirstNormalObjectId): how objects without a
# schema (casts, languages, event triggers…) are told apart from the system's own.
FIRST_NORMAL_OID = 16384

# The session settings every deparse depends on, pinned for the read: a database-level
# setting (search_path, DateStyle, quote_all_identifiers…) must not change the form.
_PINNED = {
    "search_path": "pg_catalog",
    "quote_all_identifiers": "off",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "statement_timeout": "300s",
    "lock_timeout": "60s",
}


@dataclass(frozen=True)
class CanonicalSchema:
    """Every non-system object: key "kind qualified-identity" → canonical definition."""

    objects: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the sorted objects."""
        return hashlib.sha256(canonical_json(self.objects).encode()).hexdigest()

    def to_json(self) -> str:
        return canonical_json(self.objects)

    @classmethod
    def from_json(cls, text: str) -> CanonicalSchema:
        data = json.loads(text)
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError("a canonical schema is a JSON object of strings")
        return cls(dict(data))


def canonical_json(objects: dict[str, str]) -> str:
    return json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def read_canonical_schema(
    conn: psycopg.Connection[Any],
    *,
    exclude_schemas: Sequence[str] = (),
    include_deployment: bool = False,
) -> CanonicalSchema:
    """The canonical schema of the database `conn` is connected to.

    Needs only catalog reads (any role). Runs in a transaction of its own, or in a savepoint
    of the caller's (a backup's snapshot transaction), rolled back so the pinned settings do
    not leak. `include_deployment`: also database- and role-level settings and default
    privileges, which a live signer database may hold per deployment (and a dump does not
    carry) but a restored drill database never should.
    """
    excluded = sorted({*SYSTEM_SCHEMAS, DRILL_SCHEMA, *exclude_schemas})
    query = _query(include_deployment)
    params = {
        "excluded": excluded,
        "cap": MAX_OBJECTS + 1,
        "maxdef": MAX_DEFINITION,
        "first_oid": FIRST_NORMAL_OID,
    }
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        for name, value in _PINNED.items():
            cur.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        cur.execute(query, params)
        rows = cur.fetchall()
    objects: dict[str, str] = {}
    for key, definition in rows[:MAX_OBJECTS]:
        # Two objects with one key (cannot happen in one catalog) would hide each other.
        text = str(definition)
        objects[str(key)] = text if str(key) not in objects else objects[str(key)] + "|" + text
    if len(rows) > MAX_OBJECTS:
        objects[OVER_CAP_KEY] = f"more than {MAX_OBJECTS} objects: not compared one by one"
    return CanonicalSchema(objects)


def differences(expected: CanonicalSchema, actual: CanonicalSchema, limit: int = 50) -> list[str]:
    """What differs, one line per object ("added …", "removed …", "changed …"), sorted,
    at most `limit` lines (plus one saying how many more), names escaped of control
    characters so no name can write to a terminal."""
    lines: list[str] = []
    for key in sorted(expected.objects.keys() | actual.objects.keys()):
        if key not in expected.objects:
            lines.append(f"added {escape(key)}")
        elif key not in actual.objects:
            lines.append(f"removed {escape(key)}")
        elif expected.objects[key] != actual.objects[key]:
            lines.append(f"changed {escape(key)}")
    if len(lines) > limit:
        return [*lines[:limit], f"and {len(lines) - limit} more"]
    return lines


def escape(text: str, limit: int = 200) -> str:
    """C0/C1 control characters (and DEL) as \\xNN / \\uNNNN; at most `limit` characters."""
    out = []
    for char in text[:limit]:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029, 0x200E, 0x200F) or 0x202A <= code <= 0x202E:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out) + ("…" if len(text) > limit else "")


# -- the catalog query ------------------------------------------------------------------------
# One row per object: (key, definition). Definitions are jsonb text (deterministic output,
# any value escaped). Every name is qualified: the read runs with search_path = pg_catalog.

_NS = """ns AS (
  SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
   WHERE n.nspname <> ALL (%(excluded)s::text[])
     AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)')"""

_REL_NAME = "pg_catalog.format('%%I.%%I', ns.nspname, c.relname)"
_KIND = """CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
  WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'type'
  ELSE 'relation' END"""

_RELATIONS = f"""
SELECT {_KIND} || ' ' || {_REL_NAME},
  pg_catalog.jsonb_build_object(
    'relkind', c.relkind::text, 'persistence', c.relpersistence::text,
    'rls', c.relrowsecurity, 'force_rls', c.relforcerowsecurity,
    'options', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(c.reloptions) o),
    'access_method', (SELECT a.amname FROM pg_catalog.pg_am a WHERE a.oid = c.relam),
    'partition_key', CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
    'partition_bound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'inherits', (SELECT pg_catalog.array_agg(i.inhparent::pg_catalog.regclass::text
                                             ORDER BY i.inhseqno)
                   FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
    'replica_identity', c.relreplident::text,
    'of_type', CASE WHEN c.reloftype <> 0 THEN pg_catalog.format_type(c.reloftype, NULL) END,
    'view', CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
    'server', (SELECT s.srvname FROM pg_catalog.pg_foreign_table ft
                 JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
                WHERE ft.ftrelid = c.oid),
    'foreign_options', (SELECT ft.ftoptions FROM pg_catalog.pg_foreign_table ft
                         WHERE ft.ftrelid = c.oid))::text
  FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')"""

# Column position among the live columns (a dump renumbers past dropped ones); NOT NULL from
# attnotnull (PG18 also catalogs it as a constraint of type 'n', skipped below).
_COLUMNS = f"""
SELECT 'column ' || {_REL_NAME} || '.' || pg_catalog.quote_ident(a.attname),
  pg_catalog.jsonb_build_object(
    'position', pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'not_null', a.attnotnull,
    'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
    'generated', CASE WHEN a.attgenerated <> '' THEN a.attgenerated::text || ' '
                      || pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
    'identity', NULLIF(a.attidentity::text, ''),
    'collation', CASE WHEN a.attcollation <> t.typcollation THEN
                   (SELECT pg_catalog.format('%%I.%%I', cn.nspname, co.collname)
                      FROM pg_catalog.pg_collation co
                      JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                     WHERE co.oid = a.attcollation) END,
    'storage', NULLIF(a.attstorage::text, t.typstorage::text),
    'compression', NULLIF(a.attcompression::text, ''),
    'statistics', NULLIF(GREATEST(COALESCE(a.attstattarget::int, -1), -1), -1),
    'options', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(a.attoptions) o),
    'fdw_options', a.attfdwoptions,
    'local', a.attislocal)::text
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN ns ON ns.oid = c.relnamespace
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND a.attnum > 0 AND NOT a.attisdropped"""

_INDEXES = f"""
SELECT 'index ' || {_REL_NAME},
  pg_catalog.jsonb_build_object(
    'definition', pg_catalog.pg_get_indexdef(x.indexrelid),
    'clustered', x.indisclustered, 'replica_identity', x.indisreplident)::text
  FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
  JOIN ns ON ns.oid = c.relnamespace"""

_CONSTRAINTS = """
SELECT CASE WHEN k.contypid <> 0 THEN 'domain constraint '
            || pg_catalog.format_type(k.contypid, NULL)
            ELSE 'constraint ' || k.conrelid::pg_catalog.regclass::text END
       || '.' || pg_catalog.quote_ident(k.conname),
  pg_catalog.jsonb_build_object(
    'type', k.contype::text,
    'definition', pg_catalog.pg_get_constraintdef(k.oid),
    'local', k.conislocal)::text
  FROM pg_catalog.pg_constraint k JOIN ns ON ns.oid = k.connamespace
 WHERE k.contype <> 'n'"""

_SEQUENCES = f"""
SELECT 'sequence ' || {_REL_NAME},
  pg_catalog.jsonb_build_object(
    'type', pg_catalog.format_type(s.seqtypid, NULL), 'start', s.seqstart,
    'increment', s.seqincrement, 'max', s.seqmax, 'min', s.seqmin, 'cache', s.seqcache,
    'cycle', s.seqcycle,
    'owned_by', (SELECT d.refobjid::pg_catalog.regclass::text || '.'
                        || pg_catalog.quote_ident(att.attname) || ' ' || d.deptype::text
                   FROM pg_catalog.pg_depend d
                   JOIN pg_catalog.pg_attribute att
                     ON att.attrelid = d.refobjid AND att.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.objid = c.oid AND d.refobjsubid > 0
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.deptype IN ('a', 'i') LIMIT 1),
    'persistence', c.relpersistence::text)::text
  FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
  JOIN ns ON ns.oid = c.relnamespace"""

_FUNCTIONS = """
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
                      WHEN 'w' THEN 'window function ' ELSE 'function ' END
       || p.oid::pg_catalog.regprocedure::text,
  pg_catalog.jsonb_build_object(
    'arguments', pg_catalog.pg_get_function_arguments(p.oid),
    'result', pg_catalog.pg_get_function_result(p.oid),
    'language', (SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid = p.prolang),
    'body', CASE WHEN p.prosqlbody IS NULL THEN p.prosrc
                 ELSE pg_catalog.pg_get_function_sqlbody(p.oid) END,
    'binary', p.probin, 'volatility', p.provolatile::text, 'strict', p.proisstrict,
    'security_definer', p.prosecdef, 'leakproof', p.proleakproof,
    'parallel', p.proparallel::text, 'cost', p.procost, 'rows', p.prorows,
    'config', p.proconfig, 'returns_set', p.proretset,
    'support', NULLIF(p.prosupport::text, '-'),
    'transforms', (SELECT pg_catalog.array_agg(pg_catalog.format_type(tt, NULL))
                     FROM pg_catalog.unnest(p.protrftypes) tt),
    'aggregate', (SELECT pg_catalog.jsonb_build_object(
        'kind', g.aggkind::text, 'args', g.aggnumdirectargs,
        'transition', g.aggtransfn::text, 'final', g.aggfinalfn::text,
        'combine', g.aggcombinefn::text, 'serial', g.aggserialfn::text,
        'deserial', g.aggdeserialfn::text, 'mtransition', g.aggmtransfn::text,
        'minverse', g.aggminvtransfn::text, 'mfinal', g.aggmfinalfn::text,
        'final_extra', g.aggfinalextra, 'mfinal_extra', g.aggmfinalextra,
        'final_modify', g.aggfinalmodify::text, 'mfinal_modify', g.aggmfinalmodify::text,
        'sort_operator', g.aggsortop::pg_catalog.regoperator::text,
        'state_type', pg_catalog.format_type(g.aggtranstype, NULL),
        'state_space', g.aggtransspace,
        'mstate_type', pg_catalog.format_type(NULLIF(g.aggmtranstype, 0), NULL),
        'mstate_space', g.aggmtransspace, 'initial', g.agginitval, 'minitial', g.aggminitval)
      FROM pg_catalog.pg_aggregate g WHERE g.aggfnoid = p.oid))::text
  FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace"""

# Types made implicitly (a table's row type, an array type, a range's multirange) depend on
# their owner internally ('i') and are described with it.
_TYPES = """
SELECT 'type ' || pg_catalog.format_type(t.oid, NULL),
  pg_catalog.jsonb_build_object(
    'type', t.typtype::text, 'defined', t.typisdefined,
    'labels', (SELECT pg_catalog.array_agg(e.enumlabel ORDER BY e.enumsortorder)
                 FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
    'base', CASE WHEN t.typbasetype <> 0 THEN
              pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
    'not_null', t.typnotnull,
    'default', COALESCE(pg_catalog.pg_get_expr(t.typdefaultbin, 0), t.typdefault),
    'collation', CASE WHEN t.typcollation <> COALESCE(
                   (SELECT b.typcollation FROM pg_catalog.pg_type b
                     WHERE b.oid = t.typbasetype), 0) THEN
                   (SELECT pg_catalog.format('%%I.%%I', cn.nspname, co.collname)
                      FROM pg_catalog.pg_collation co
                      JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                     WHERE co.oid = t.typcollation) END,
    'range', (SELECT pg_catalog.jsonb_build_object(
                'subtype', pg_catalog.format_type(r.rngsubtype, NULL),
                'collation', r.rngcollation <> 0,
                'opclass', (SELECT oc.opcname FROM pg_catalog.pg_opclass oc
                             WHERE oc.oid = r.rngsubopc),
                'canonical', r.rngcanonical::text, 'diff', r.rngsubdiff::text,
                'multirange', pg_catalog.format_type(r.rngmultitypid, NULL))
                FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid),
    'io', CASE WHEN t.typtype IN ('b', 'p') THEN pg_catalog.jsonb_build_object(
            'input', t.typinput::text, 'output', t.typoutput::text,
            'receive', t.typreceive::text, 'send', t.typsend::text,
            'modin', t.typmodin::text, 'modout', t.typmodout::text,
            'analyze', t.typanalyze::text, 'subscript', t.typsubscript::text,
            'length', t.typlen, 'by_value', t.typbyval, 'align', t.typalign::text,
            'storage', t.typstorage::text, 'category', t.typcategory::text,
            'preferred', t.typispreferred, 'delimiter', t.typdelim::text,
            'element', CASE WHEN t.typelem <> 0 THEN pg_catalog.format_type(t.typelem, NULL) END)
          END)::text
  FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
 WHERE t.typrelid = 0
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                      AND d.objid = t.oid AND d.deptype = 'i')"""

_CASTS = """
SELECT 'cast (' || pg_catalog.format_type(k.castsource, NULL) || ' AS '
       || pg_catalog.format_type(k.casttarget, NULL) || ')',
  pg_catalog.jsonb_build_object(
    'function', CASE WHEN k.castfunc <> 0 THEN k.castfunc::pg_catalog.regprocedure::text END,
    'context', k.castcontext::text, 'method', k.castmethod::text)::text
  FROM pg_catalog.pg_cast k WHERE k.oid >= %(first_oid)s"""

_OPERATORS = """
SELECT 'operator ' || o.oid::pg_catalog.regoperator::text,
  pg_catalog.jsonb_build_object(
    'function', o.oprcode::pg_catalog.regprocedure::text,
    'result', pg_catalog.format_type(o.oprresult, NULL),
    'restrict', o.oprrest::text, 'join', o.oprjoin::text,
    'commutator', NULLIF(o.oprcom, 0)::pg_catalog.regoperator::text,
    'negator', NULLIF(o.oprnegate, 0)::pg_catalog.regoperator::text,
    'merges', o.oprcanmerge, 'hashes', o.oprcanhash)::text
  FROM pg_catalog.pg_operator o JOIN ns ON ns.oid = o.oprnamespace"""

_OPCLASSES = """
SELECT 'operator class ' || pg_catalog.format('%%I.%%I', ns.nspname, oc.opcname)
       || ' USING ' || am.amname,
  pg_catalog.jsonb_build_object(
    'family', (SELECT pg_catalog.format('%%I.%%I', fn.nspname, f.opfname)
                 FROM pg_catalog.pg_opfamily f
                 JOIN pg_catalog.pg_namespace fn ON fn.oid = f.opfnamespace
                WHERE f.oid = oc.opcfamily),
    'type', pg_catalog.format_type(oc.opcintype, NULL), 'default', oc.opcdefault,
    'key_type', CASE WHEN oc.opckeytype <> 0 THEN
                  pg_catalog.format_type(oc.opckeytype, NULL) END)::text
  FROM pg_catalog.pg_opclass oc JOIN ns ON ns.oid = oc.opcnamespace
  JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod"""

_OPFAMILIES = """
SELECT 'operator family ' || pg_catalog.format('%%I.%%I', ns.nspname, f.opfname)
       || ' USING ' || am.amname,
  pg_catalog.jsonb_build_object(
    'operators', (SELECT pg_catalog.array_agg(pg_catalog.concat_ws(' ', o.amopstrategy,
                    o.amopopr::pg_catalog.regoperator::text, o.amoppurpose::text,
                    pg_catalog.format_type(o.amoplefttype, NULL),
                    pg_catalog.format_type(o.amoprighttype, NULL)) ORDER BY 1)
                    FROM pg_catalog.pg_amop o WHERE o.amopfamily = f.oid),
    'functions', (SELECT pg_catalog.array_agg(pg_catalog.concat_ws(' ', pr.amprocnum,
                    pr.amproc::pg_catalog.regprocedure::text,
                    pg_catalog.format_type(pr.amproclefttype, NULL),
                    pg_catalog.format_type(pr.amprocrighttype, NULL)) ORDER BY 1)
                    FROM pg_catalog.pg_amproc pr WHERE pr.amprocfamily = f.oid))::text
  FROM pg_catalog.pg_opfamily f JOIN ns ON ns.oid = f.opfnamespace
  JOIN pg_catalog.pg_am am ON am.oid = f.opfmethod"""

# Column names differ across versions (colliculocale ≤ 16, colllocale ≥ 17): read as jsonb.
_COLLATIONS = """
SELECT 'collation ' || pg_catalog.format('%%I.%%I', ns.nspname, co.collname),
  pg_catalog.jsonb_build_object(
    'provider', j->>'collprovider', 'deterministic', j->'collisdeterministic',
    'encoding', j->'collencoding', 'collate', j->>'collcollate', 'ctype', j->>'collctype',
    'locale', COALESCE(j->>'colllocale', j->>'colliculocale'),
    'rules', j->>'collicurules')::text
  FROM pg_catalog.pg_collation co JOIN ns ON ns.oid = co.collnamespace
  CROSS JOIN LATERAL pg_catalog.to_jsonb(co) j"""

_CONVERSIONS = """
SELECT 'conversion ' || pg_catalog.format('%%I.%%I', ns.nspname, cv.conname),
  pg_catalog.jsonb_build_object(
    'from', pg_catalog.pg_encoding_to_char(cv.conforencoding),
    'to', pg_catalog.pg_encoding_to_char(cv.contoencoding),
    'function', cv.conproc::pg_catalog.regprocedure::text, 'default', cv.condefault)::text
  FROM pg_catalog.pg_conversion cv JOIN ns ON ns.oid = cv.connamespace"""

_TEXT_SEARCH = """
SELECT 'text search configuration ' || pg_catalog.format('%%I.%%I', ns.nspname, cf.cfgname),
  pg_catalog.jsonb_build_object(
    'parser', cf.cfgparser::pg_catalog.regclass::text,
    'parser_name', (SELECT pg_catalog.format('%%I.%%I', pn.nspname, pp.prsname)
                      FROM pg_catalog.pg_ts_parser pp
                      JOIN pg_catalog.pg_namespace pn ON pn.oid = pp.prsnamespace
                     WHERE pp.oid = cf.cfgparser),
    'mappings', (SELECT pg_catalog.array_agg(pg_catalog.concat_ws(' ', m.maptokentype,
                   m.mapseqno, m.mapdict::pg_catalog.regdictionary::text) ORDER BY 1)
                   FROM pg_catalog.pg_ts_config_map m WHERE m.mapcfg = cf.oid))::text
  FROM pg_catalog.pg_ts_config cf JOIN ns ON ns.oid = cf.cfgnamespace
UNION ALL
SELECT 'text search dictionary ' || pg_catalog.format('%%I.%%I', ns.nspname, dc.dictname),
  pg_catalog.jsonb_build_object(
    'template', (SELECT pg_catalog.format('%%I.%%I', tn.nspname, tt.tmplname)
                   FROM pg_catalog.pg_ts_template tt
                   JOIN pg_catalog.pg_namespace tn ON tn.oid = tt.tmplnamespace
                  WHERE tt.oid = dc.dicttemplate),
    'options', dc.dictinitoption)::text
  FROM pg_catalog.pg_ts_dict dc JOIN ns ON ns.oid = dc.dictnamespace
UNION ALL
SELECT 'text search parser ' || pg_catalog.format('%%I.%%I', ns.nspname, pp.prsname),
  pg_catalog.jsonb_build_object(
    'start', pp.prsstart::text, 'token', pp.prstoken::text, 'end', pp.prsend::text,
    'headline', pp.prsheadline::text, 'lextype', pp.prslextype::text)::text
  FROM pg_catalog.pg_ts_parser pp JOIN ns ON ns.oid = pp.prsnamespace
UNION ALL
SELECT 'text search template ' || pg_catalog.format('%%I.%%I', ns.nspname, tt.tmplname),
  pg_catalog.jsonb_build_object(
    'init', tt.tmplinit::text, 'lexize', tt.tmpllexize::text)::text
  FROM pg_catalog.pg_ts_template tt JOIN ns ON ns.oid = tt.tmplnamespace"""

_POLICIES = """
SELECT 'policy ' || pg_catalog.quote_ident(po.polname) || ' ON '
       || po.polrelid::pg_catalog.regclass::text,
  pg_catalog.jsonb_build_object(
    'command', po.polcmd::text, 'permissive', po.polpermissive,
    'roles', (SELECT pg_catalog.array_agg(CASE WHEN r = 0 THEN 'public' ELSE
                (SELECT ro.rolname FROM pg_catalog.pg_roles ro WHERE ro.oid = r)::text END
                ORDER BY 1) FROM pg_catalog.unnest(po.polroles) r),
    'using', pg_catalog.pg_get_expr(po.polqual, po.polrelid),
    'check', pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))::text
  FROM pg_catalog.pg_policy po JOIN pg_catalog.pg_class c ON c.oid = po.polrelid
  JOIN ns ON ns.oid = c.relnamespace"""

_TRIGGERS = """
SELECT 'trigger ' || pg_catalog.quote_ident(tg.tgname) || ' ON '
       || tg.tgrelid::pg_catalog.regclass::text,
  pg_catalog.jsonb_build_object(
    'definition', pg_catalog.pg_get_triggerdef(tg.oid), 'enabled', tg.tgenabled::text)::text
  FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
  JOIN ns ON ns.oid = c.relnamespace
 WHERE NOT tg.tgisinternal"""

_RULES = """
SELECT 'rule ' || pg_catalog.quote_ident(ru.rulename) || ' ON '
       || ru.ev_class::pg_catalog.regclass::text,
  pg_catalog.jsonb_build_object(
    'definition', pg_catalog.pg_get_ruledef(ru.oid), 'enabled', ru.ev_enabled::text)::text
  FROM pg_catalog.pg_rewrite ru JOIN pg_catalog.pg_class c ON c.oid = ru.ev_class
  JOIN ns ON ns.oid = c.relnamespace
 WHERE ru.rulename <> '_RETURN'"""

# Objects with no schema: the system's own have OIDs below FirstNormalObjectId.
_GLOBAL = """
SELECT 'event trigger ' || pg_catalog.quote_ident(ev.evtname),
  pg_catalog.jsonb_build_object(
    'event', ev.evtevent, 'function', ev.evtfoid::pg_catalog.regprocedure::text,
    'tags', ev.evttags, 'enabled', ev.evtenabled::text)::text
  FROM pg_catalog.pg_event_trigger ev
UNION ALL
SELECT 'extension ' || pg_catalog.quote_ident(x.extname),
  pg_catalog.jsonb_build_object(
    'schema', (SELECT xn.nspname FROM pg_catalog.pg_namespace xn
                WHERE xn.oid = x.extnamespace),
    'relocatable', x.extrelocatable)::text
  FROM pg_catalog.pg_extension x
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace xn
                    WHERE xn.oid = x.extnamespace AND xn.nspname = ANY (%(excluded)s::text[])
                      AND xn.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']))
UNION ALL
SELECT 'language ' || pg_catalog.quote_ident(l.lanname),
  pg_catalog.jsonb_build_object(
    'procedural', l.lanispl, 'trusted', l.lanpltrusted,
    'handler', l.lanplcallfoid::pg_catalog.regprocedure::text,
    'inline', l.laninline::pg_catalog.regprocedure::text,
    'validator', l.lanvalidator::pg_catalog.regprocedure::text)::text
  FROM pg_catalog.pg_language l
 WHERE l.oid >= %(first_oid)s OR l.lanname <> ALL (ARRAY['internal', 'c', 'sql', 'plpgsql'])
UNION ALL
SELECT 'access method ' || pg_catalog.quote_ident(am.amname),
  pg_catalog.jsonb_build_object(
    'type', am.amtype::text, 'handler', am.amhandler::text)::text
  FROM pg_catalog.pg_am am WHERE am.oid >= %(first_oid)s
UNION ALL
SELECT 'transform for ' || pg_catalog.format_type(tr.trftype, NULL) || ' language '
       || (SELECT pg_catalog.quote_ident(l.lanname) FROM pg_catalog.pg_language l
            WHERE l.oid = tr.trflang),
  pg_catalog.jsonb_build_object(
    'from_sql', tr.trffromsql::text, 'to_sql', tr.trftosql::text)::text
  FROM pg_catalog.pg_transform tr WHERE tr.oid >= %(first_oid)s
UNION ALL
SELECT 'publication ' || pg_catalog.quote_ident(pb.pubname),
  pg_catalog.jsonb_build_object(
    'all_tables', pb.puballtables, 'insert', pb.pubinsert, 'update', pb.pubupdate,
    'delete', pb.pubdelete, 'truncate', pb.pubtruncate, 'via_root', pb.pubviaroot,
    'tables', (SELECT pg_catalog.array_agg(pr.prrelid::pg_catalog.regclass::text
                 || COALESCE(' WHERE ' || pg_catalog.pg_get_expr(pr.prqual, pr.prrelid), '')
                 ORDER BY 1)
                 FROM pg_catalog.pg_publication_rel pr WHERE pr.prpubid = pb.oid),
    'schemas', (SELECT pg_catalog.array_agg(pn.nspname::text ORDER BY 1)
                  FROM pg_catalog.pg_publication_namespace pnm
                  JOIN pg_catalog.pg_namespace pn ON pn.oid = pnm.pnnspid
                 WHERE pnm.pnpubid = pb.oid))::text
  FROM pg_catalog.pg_publication pb
UNION ALL
SELECT 'subscription ' || pg_catalog.quote_ident(su.subname),
  pg_catalog.jsonb_build_object(
    'enabled', su.subenabled, 'publications', su.subpublications)::text
  FROM pg_catalog.pg_subscription su
 WHERE su.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
UNION ALL
SELECT 'foreign-data wrapper ' || pg_catalog.quote_ident(w.fdwname),
  pg_catalog.jsonb_build_object(
    'handler', w.fdwhandler::text, 'validator', w.fdwvalidator::text,
    'options', w.fdwoptions)::text
  FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.oid >= %(first_oid)s
UNION ALL
SELECT 'server ' || pg_catalog.quote_ident(s.srvname),
  pg_catalog.jsonb_build_object(
    'wrapper', (SELECT w.fdwname FROM pg_catalog.pg_foreign_data_wrapper w
                 WHERE w.oid = s.srvfdw),
    'type', s.srvtype, 'version', s.srvversion, 'options', s.srvoptions)::text
  FROM pg_catalog.pg_foreign_server s
UNION ALL
SELECT 'user mapping for ' || pg_catalog.quote_ident(um.usename::text) || ' server '
       || pg_catalog.quote_ident(um.srvname::text), '{}'
  FROM pg_catalog.pg_user_mappings um
UNION ALL
SELECT 'large objects', pg_catalog.jsonb_build_object('count', pg_catalog.count(*))::text
  FROM pg_catalog.pg_largeobject_metadata"""

_STATISTICS = """
SELECT 'statistics ' || pg_catalog.format('%%I.%%I', ns.nspname, se.stxname),
  pg_catalog.jsonb_build_object(
    'definition', pg_catalog.pg_get_statisticsobjdef(se.oid),
    'target', NULLIF(GREATEST(COALESCE((pg_catalog.to_jsonb(se)->>'stxstattarget')::int,
                                       -1), -1), -1))::text
  FROM pg_catalog.pg_statistic_ext se JOIN ns ON ns.oid = se.stxnamespace"""

# Comments: pg_identify_object names any commented object (machine-readable, untranslated).
# Objects of the system and of the drill's own schema are left out; the database's own
# comment is keyed without its name (the restored copy has another).
_COMMENTS = """
SELECT 'comment on ' || o.type || ' ' || o.identity,
  pg_catalog.left(de.description, %(maxdef)s)
  FROM pg_catalog.pg_description de
  CROSS JOIN LATERAL pg_catalog.pg_identify_object(de.classoid, de.objoid, de.objsubid) o
 WHERE (de.objoid >= %(first_oid)s
        OR de.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass)
   AND (o.schema IS NULL OR (o.schema <> ALL (%(excluded)s::text[])
                             AND o.schema !~ '^pg_(toast|temp_|toast_temp_)'))
   AND NOT (de.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
            AND (o.identity = ANY (%(excluded)s::text[])
                 OR o.identity ~ '^pg_(toast|temp_|toast_temp_)'))
   AND NOT (de.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension x
                          JOIN pg_catalog.pg_namespace xn ON xn.oid = x.extnamespace
                         WHERE x.oid = de.objoid
                           AND xn.nspname = ANY (%(excluded)s::text[])
                           AND xn.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])))
UNION ALL
SELECT 'comment on database', pg_catalog.left(sd.description, %(maxdef)s)
  FROM pg_catalog.pg_shdescription sd
 WHERE sd.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
   AND sd.objoid = (SELECT d.oid FROM pg_catalog.pg_database d
                     WHERE d.datname = pg_catalog.current_database())"""

_SCHEMAS = """
SELECT 'schema ' || pg_catalog.quote_ident(ns.nspname), '{}' FROM ns"""

# Settings: one object per setting, so a changed value names the setting.
_DB_SETTINGS = """
SELECT 'database setting ' || pg_catalog.split_part(cfg, '=', 1),
  pg_catalog.substr(cfg, pg_catalog.strpos(cfg, '=') + 1)
  FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) cfg
 WHERE s.setrole = 0 AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database d
                                           WHERE d.datname = pg_catalog.current_database())"""

_DEPLOYMENT = """
SELECT 'role setting ' || pg_catalog.quote_ident(r.rolname)
       || CASE WHEN s.setdatabase = 0 THEN ' ' ELSE ' in this database ' END
       || pg_catalog.split_part(cfg, '=', 1),
  pg_catalog.substr(cfg, pg_catalog.strpos(cfg, '=') + 1)
  FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) cfg
  JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
 WHERE s.setrole <> 0 AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                 WHERE d.datname = pg_catalog.current_database()))
UNION ALL
SELECT 'default privileges ' || COALESCE(
         (SELECT pg_catalog.quote_ident(r.rolname) FROM pg_catalog.pg_roles r
           WHERE r.oid = da.defaclrole), '?')
       || COALESCE(' in ' || (SELECT pg_catalog.quote_ident(dn.nspname)
                                FROM pg_catalog.pg_namespace dn
                               WHERE dn.oid = da.defaclnamespace), '')
       || ' on ' || da.defaclobjtype::text,
  pg_catalog.array_to_string(da.defaclacl, ',')
  FROM pg_catalog.pg_default_acl da"""

_PARTS = (
    _SCHEMAS,
    _RELATIONS,
    _COLUMNS,
    _INDEXES,
    _CONSTRAINTS,
    _SEQUENCES,
    _FUNCTIONS,
    _TYPES,
    _CASTS,
    _OPERATORS,
    _OPCLASSES,
    _OPFAMILIES,
    _COLLATIONS,
    _CONVERSIONS,
    _TEXT_SEARCH,
    _POLICIES,
    _TRIGGERS,
    _RULES,
    _GLOBAL,
    _STATISTICS,
    _COMMENTS,
)


def _query(include_deployment: bool) -> str:
    # Settings are never in a dump sbtc-ops takes (no --create): a live database's own would
    # only make its restored copies differ. In the drill, any setting is the archive's.
    parts = [*_PARTS, _DB_SETTINGS, _DEPLOYMENT] if include_deployment else list(_PARTS)
    union = "\nUNION ALL\n".join(f"({part})" for part in parts)
    # Long definitions are cut and hashed in the server: bounded rows, exact comparison.
    return f"""WITH {_NS}
SELECT key, CASE WHEN pg_catalog.length(def) > %(maxdef)s
                 THEN pg_catalog.left(def, %(maxdef)s) || ' …sha256:' || pg_catalog.encode(
                      pg_catalog.sha256(pg_catalog.convert_to(def, 'UTF8')), 'hex')
                 ELSE def END
  FROM ({union}) AS objects(key, def)
 WHERE key IS NOT NULL
 LIMIT %(cap)s"""
