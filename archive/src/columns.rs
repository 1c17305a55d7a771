//! One archive file's columns: the interaction event's fields, plus where it was read in the log
//! (Kafka partition and offset; empty for events the API applied in process).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use schemas::{EventType, InteractionEvent};

/// An event as archived.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    pub event: InteractionEvent,
    /// (partition, offset) in the events topic, when it came through Kafka.
    pub position: Option<(i32, i64)>,
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("event_time_ms", DataType::Int64, false),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
    ]))
}

pub(crate) fn to_parquet(events: &[&ArchivedEvent]) -> Result<Vec<u8>, String> {
    let strings = |field: fn(&InteractionEvent) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|row| field(&row.event)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|event| &event.event_id),
        strings(|event| &event.user_id),
        strings(|event| &event.item_id),
        strings(|event| event.event_type.as_str()),
        Arc::new(Float64Array::from_iter(
            events.iter().map(|row| row.event.value),
        )),
        Arc::new(Int64Array::from_iter_values(
            events.iter().map(|row| row.event.event_time_ms),
        )),
        Arc::new(Int32Array::from_iter(
            events
                .iter()
                .map(|row| row.position.map(|(partition, _)| partition)),
        )),
        Arc::new(Int64Array::from_iter(
            events
                .iter()
                .map(|row| row.position.map(|(_, offset)| offset)),
        )),
    ];
    let batch = RecordBatch::try_new(schema(), columns).map_err(|error| error.to_string())?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties))
        .map_err(|error| error.to_string())?;
    writer.write(&batch).map_err(|error| error.to_string())?;
    writer.close().map_err(|error| error.to_string())?;
    Ok(bytes)
}

pub(crate) fn from_parquet(file: std::fs::File) -> Result<Vec<ArchivedEvent>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|error| error.to_string())?;
    let mut events = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| error.to_string())?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name}"))
        };
        let wrong = |name: &str| format!("column {name} has another type");
        let string = |name: &'static str| {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong(name))
        };
        let event_id = string("event_id")?;
        let user_id = string("user_id")?;
        let item_id = string("item_id")?;
        let event_type = string("event_type")?;
        let value = column("value")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| wrong("value"))?;
        let time = column("event_time_ms")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| wrong("event_time_ms"))?;
        let partition = column("partition")?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| wrong("partition"))?;
        let offset = column("offset")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| wrong("offset"))?;
        for row in 0..batch.num_rows() {
            let kind = event_type.value(row);
            let event_type = EventType::ALL
                .into_iter()
                .find(|known| known.as_str() == kind)
                .ok_or_else(|| format!("unknown event type '{kind}'"))?;
            events.push(ArchivedEvent {
                event: InteractionEvent {
                    event_id: event_id.value(row).to_owned(),
                    user_id: user_id.value(row).to_owned(),
                    item_id: item_id.value(row).to_owned(),
                    event_type,
                    value: value.is_valid(row).then(|| value.value(row)),
                    event_time_ms: time.value(row),
                },
                position: (partition.is_valid(row) && offset.is_valid(row))
                    .then(|| (partition.value(row), offset.value(row))),
            });
        }
    }
    Ok(events)
}
