//! How `flow.proto`'s fields become `flows` columns, written once: the ClickHouse type each
//! proto type is stored as ([`column_types`]), the columns stored otherwise ([`TYPE_EXCEPTIONS`],
//! each with its reason), the columns that are no field ([`COMPUTED_COLUMNS`]), and the checks
//! every list of the flow's columns in the sink is tested with against the descriptor
//! ([`netmeter_proto::flow_fields::ALL`]): the `flows` DDL (`tables.rs`), the Native columns
//! (`native.rs`), `FlowRow` (`row.rs`) and the Kafka-engine table (`kafka_engine.rs`).
//!
//! A field added to `flow.proto` and missing from one of them fails that list's test with a line
//! that names the field and the list.

use netmeter_proto::flow_fields::{ALL, FieldType, FlowField};

/// A `flows` column whose type is not the plain mapping of its field's type.
pub(crate) struct TypeException {
    pub field: &'static str,
    pub column_type: &'static str,
    pub why: &'static str,
}

pub(crate) const TYPE_EXCEPTIONS: [TypeException; 5] = [
    TypeException {
        field: "record_id",
        column_type: "UUID",
        why: "16 bytes instead of 36 characters, in the sort key of every row; the sink rejects \
              a record whose id is not a UUID (RowError::RecordId)",
    },
    TypeException {
        field: "local_ip",
        column_type: "IPv6",
        why: "16 bytes with IPv4 stored mapped (::ffff:a.b.c.d): one column for both families, \
              and ClickHouse's IP functions work on it; an address that does not parse is \
              rejected (RowError::Ip)",
    },
    TypeException {
        field: "remote_ip",
        column_type: "IPv6",
        why: "as local_ip",
    },
    TypeException {
        field: "local_port",
        column_type: "UInt16",
        why: "proto3 has no 16-bit integer; a port above 65535 is rejected (RowError::Port)",
    },
    TypeException {
        field: "remote_port",
        column_type: "UInt16",
        why: "as local_port",
    },
];

/// Columns of `flows` that are no field of `flow.proto`, and why they exist. ClickHouse
/// computes them (`MATERIALIZED`), so nothing writes them: not in the Native insert, `FlowRow`
/// or the Kafka-engine table.
pub(crate) const COMPUTED_COLUMNS: [(&str, &str); 1] = [(
    "interval_start",
    "materialized from interval_start_unix_ms: the partition key and the sort key need a \
     DateTime",
)];

/// The types the `flows` column of `field` may have: its exception's, else the plain mapping of
/// its proto type (a string is `LowCardinality(String)` when it has few values, which is a choice
/// per column, so both are right).
pub(crate) fn column_types(field: FlowField) -> Vec<&'static str> {
    if let Some(exception) = TYPE_EXCEPTIONS.iter().find(|e| e.field == field.name) {
        return vec![exception.column_type];
    }
    match field.ty {
        FieldType::String => vec!["String", "LowCardinality(String)"],
        FieldType::Bool => vec!["Bool"],
        FieldType::Uint32 => vec!["UInt32"],
        FieldType::Uint64 => vec!["UInt64"],
        FieldType::Double => vec!["Float64"],
    }
}

/// What is wrong in the column names of `place` against `flow.proto`, one line each: a field
/// without a column, a column without a field, or (when the names agree) a column out of the
/// fields' number order. Computed columns are skipped.
pub(crate) fn name_mismatches(place: &str, names: &[&str]) -> Vec<String> {
    let names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !COMPUTED_COLUMNS.iter().any(|(c, _)| c == name))
        .collect();
    let mut wrong = Vec::new();
    for field in ALL {
        if !names.contains(&field.name) {
            wrong.push(format!(
                "flow.proto field `{field}` has no column in {place}"
            ));
        }
    }
    for name in &names {
        if !ALL.iter().any(|f| f.name == *name) {
            wrong.push(format!(
                "{place} has a column `{name}`, which is no field of flow.proto"
            ));
        }
    }
    if wrong.is_empty() {
        for (name, field) in names.iter().zip(ALL) {
            if *name != field.name {
                wrong.push(format!(
                    "{place} has `{name}` where flow.proto's field-number order has `{field}`"
                ));
            }
        }
    }
    wrong
}

/// [`name_mismatches`], then each column whose type is not one of `types(field)`.
pub(crate) fn type_mismatches(
    place: &str,
    columns: &[(&str, &str)],
    types: fn(FlowField) -> Vec<&'static str>,
) -> Vec<String> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut wrong = name_mismatches(place, &names);
    for (name, ty) in columns {
        let Some(field) = ALL.iter().copied().find(|f| f.name == *name) else {
            continue;
        };
        let expected = types(field);
        if !expected.contains(ty) {
            wrong.push(format!(
                "flow.proto field `{field}` is {ty} in {place}, expected {} (an exception \
                 belongs in TYPE_EXCEPTIONS, services/sink/src/schema/proto_fields.rs)",
                expected.join(" or ")
            ));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exception_is_a_field() {
        for exception in &TYPE_EXCEPTIONS {
            assert!(
                netmeter_proto::flow_fields::by_name(exception.field).is_some(),
                "TYPE_EXCEPTIONS names `{}`, which is no field of flow.proto",
                exception.field
            );
            assert!(!exception.why.is_empty());
        }
        for (column, _) in COMPUTED_COLUMNS {
            assert_eq!(netmeter_proto::flow_fields::by_name(column), None);
        }
    }

    #[test]
    fn a_missing_extra_mistyped_or_misplaced_column_is_named() {
        let place = "the test's columns";
        let good: Vec<(&str, &str)> = ALL.iter().map(|f| (f.name, column_types(*f)[0])).collect();
        assert_eq!(
            type_mismatches(place, &good, column_types),
            Vec::<String>::new()
        );

        let mut missing = good.clone();
        missing.retain(|(name, _)| *name != "local_initiated");
        assert_eq!(
            type_mismatches(place, &missing, column_types),
            ["flow.proto field `bool local_initiated = 22` has no column in the test's columns"]
        );
        let mut extra = good.clone();
        extra.push(("local_mood", "String"));
        assert_eq!(
            type_mismatches(place, &extra, column_types),
            ["the test's columns has a column `local_mood`, which is no field of flow.proto"]
        );
        let mut mistyped = good.clone();
        mistyped[0].1 = "String";
        assert_eq!(
            type_mismatches(place, &mistyped, column_types),
            [
                "flow.proto field `string record_id = 1` is String in the test's columns, \
                 expected UUID (an exception belongs in TYPE_EXCEPTIONS, \
                 services/sink/src/schema/proto_fields.rs)"
            ]
        );
        let mut misplaced = good.clone();
        misplaced.swap(0, 1);
        assert_eq!(
            name_mismatches(
                place,
                &misplaced.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ),
            [
                "the test's columns has `generation` where flow.proto's field-number order has \
                 `string record_id = 1`",
                "the test's columns has `record_id` where flow.proto's field-number order has \
                 `uint64 generation = 2`"
            ]
        );
    }
}
