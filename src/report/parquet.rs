//! Writing Parquet files that every reader opens (pandas, polars, DuckDB, Arrow before 15).
//!
//! polars 0.55 hands its string columns to the Parquet writer as Arrow `string_view` and
//! records that type in the file's embedded Arrow schema (the `ARROW:schema` key). The column
//! data is plain Parquet either way (physical type BYTE_ARRAY, logical type STRING), but
//! readers that trust the embedded schema and predate `string_view` (Arrow < 15: older pyarrow
//! and the pandas built on it) refuse the file. So every table of ours embeds its own Arrow
//! schema, in which string columns are plain `utf8` and binary ones plain `binary`: the types
//! any Arrow reader knows, and what pandas itself writes. polars reads them back as its usual
//! strings.

use super::table::table_error;
use crate::atomic;
use crate::error::Result;
use polars::prelude::{
    ArrowDataType, CompatLevel, DataFrame, KeyValueMetadata, ParquetCompression, ParquetWriter, SchemaExt,
};
use polars_parquet::write::{schema_to_metadata_key, KeyValue};
use std::path::Path;

/// The Arrow type a table column is declared with: views and 64-bit offsets become the plain
/// 32-bit-offset types (the Parquet data does not depend on the choice).
fn plain(dtype: ArrowDataType) -> ArrowDataType {
    match dtype {
        ArrowDataType::Utf8View | ArrowDataType::LargeUtf8 => ArrowDataType::Utf8,
        ArrowDataType::BinaryView | ArrowDataType::LargeBinary => ArrowDataType::Binary,
        other => other,
    }
}

/// The `ARROW:schema` entry of `df` with plain string and binary types.
fn plain_arrow_schema(df: &DataFrame) -> KeyValue {
    let mut schema = df.schema().to_arrow(CompatLevel::oldest());
    for field in schema.iter_values_mut() {
        field.dtype = plain(field.dtype.clone());
    }
    schema_to_metadata_key(&schema)
}

/// `df` as Parquet bytes (Zstandard), with `metadata` as file-level key/value pairs and plain
/// string types in the embedded Arrow schema (`path` names the table in errors).
pub fn encode_table(path: &Path, df: &mut DataFrame, metadata: Vec<(String, String)>) -> Result<Vec<u8>> {
    let mut kv = vec![plain_arrow_schema(df)];
    kv.extend(metadata.into_iter().map(|(key, value)| KeyValue { key, value: Some(value) }));
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(KeyValueMetadata::Static(kv)))
        .finish(df)
        .map_err(table_error(path))?;
    Ok(bytes)
}

/// Writes `df` to `path` as [`encode_table`] encodes it, atomically (a temporary file renamed
/// into place).
pub fn write_table(path: &Path, df: &mut DataFrame, metadata: Vec<(String, String)>) -> Result<()> {
    let bytes = encode_table(path, df, metadata)?;
    atomic::write_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{Column, ParquetReader, SerReader};

    #[test]
    fn tables_keep_their_metadata_and_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let mut df = DataFrame::new(
            2,
            vec![
                Column::new("method".into(), ["gradient", "smoothgrad"]),
                Column::new("target".into(), [Some("gradient"), None]),
                Column::new("x".into(), [1.5f64, 2.5]),
            ],
        )
        .unwrap();
        write_table(&p, &mut df, vec![("k".into(), "v".into())]).unwrap();
        let mut reader = ParquetReader::new(std::fs::File::open(&p).unwrap());
        let kv = reader.get_metadata().unwrap().key_value_metadata().clone().unwrap();
        let keys: Vec<&str> = kv.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["ARROW:schema", "k"]);
        assert_eq!(reader.finish().unwrap(), df);
        assert_eq!(plain(ArrowDataType::Utf8View), ArrowDataType::Utf8);
        assert_eq!(plain(ArrowDataType::BinaryView), ArrowDataType::Binary);
        assert_eq!(plain(ArrowDataType::Float64), ArrowDataType::Float64);
    }
}
