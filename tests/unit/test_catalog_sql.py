"""The catalog's DDL: the values DuckDB cannot bind there are written in quoted, in one pass."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from embedlake.tasks import catalog, lake


def test_fill_writes_each_marker_once_and_refuses_a_missing_one():
    # a value holding a marker is not filled again (a lake folder may be named anything)
    text = catalog._fill("SELECT @A@, @B@", A=catalog._literal("@B@"), B="2")
    assert text == "SELECT '@B@', 2"
    with pytest.raises(ValueError, match="B"):
        catalog._fill("SELECT @A@, @B@", A="1")


def test_quoting_keeps_any_text_one_literal_and_any_name_one_identifier():
    name = """it's a "name"; DROP VIEW x; --"""
    with duckdb.connect() as con:
        assert con.execute(f"SELECT {catalog._literal(name)}").fetchone() == (name,)
        con.execute(f"CREATE VIEW {catalog._identifier(name)} AS SELECT 1 AS one")
        assert con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall() == [(name,)]


def test_a_lake_and_a_backbone_with_quotes_in_their_names_build_a_working_catalog(tmp_path):
    folder = tmp_path / """it's "odd" @METADATA_PART@""" / "lake"
    root = lake.Lake.at(folder).ensure()
    backbone = "mobilenet_v1 'quoted'"
    vectors = np.eye(4, 8, dtype=np.float32)
    table = lake.embeddings_table(
        image_ids=[f"{i:064x}" for i in range(4)],
        backbone=backbone,
        weights_id="w",
        precision="fp32",
        vectors=vectors,
        norms=np.ones(4, np.float32),
        run_id="r1",
    )
    root.write_part(table, "embeddings", "r1.parquet")
    built = catalog.build_catalog(root)
    # another DuckDB client, without embedlake's variable, falls back to the lake's location
    with duckdb.connect(str(built), read_only=True) as con:
        assert con.execute("SELECT lake_path('x')").fetchone() == (f"{folder}/x",)
    with catalog.connect_read_only(root) as con:
        rows = con.execute(
            "SELECT DISTINCT backbone, typeof(embedding) FROM embeddings_mobilenet_v1_quoted"
        ).fetchall()
        assert rows == [(backbone, "FLOAT[8]")]
        assert con.execute("SELECT count(*) FROM metadata").fetchone() == (0,)
