//! The codec's contract: round trips, typed refusals, migration, and no
//! panic on arbitrary bytes.

use proptest::prelude::*;
use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// Version 1 of a test schema.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct PointV1 {
    x: u32,
    y: u32,
}

impl Schema for PointV1 {
    const SCHEMA_ID: u16 = 7;
    const VERSION: u16 = 1;
    const NAME: &'static str = "point";
}

impl Migrate for PointV1 {}

/// Version 2 adds a field; it reads version 1 through its migration hook.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Point {
    x: u32,
    y: u32,
    z: u64,
    tags: Vec<u16>,
}

impl Schema for Point {
    const SCHEMA_ID: u16 = 7;
    const VERSION: u16 = 2;
    const NAME: &'static str = "point";
}

impl Migrate for Point {
    fn migrate(version: u16, body: &[u8]) -> Result<Self, DecodeError> {
        match version {
            1 => {
                let old = Rkyv::access_body::<PointV1>(version, body)?;
                Ok(Point {
                    x: old.x.to_native(),
                    y: old.y.to_native(),
                    z: 0,
                    tags: Vec::new(),
                })
            }
            _ => Err(DecodeError::NoMigration {
                schema: Self::NAME,
                version,
                current: Self::VERSION,
            }),
        }
    }
}

fn point() -> Point {
    Point {
        x: 1,
        y: 2,
        z: 3,
        tags: vec![4, 5],
    }
}

#[test]
fn round_trips_through_the_codec_trait() {
    let mut buf = [0u8; 128];
    let len = Codec::<Point>::encode(&Rkyv, &point(), &mut buf).unwrap();
    assert_eq!(
        Header::read(&buf).unwrap(),
        Header {
            schema_id: 7,
            version: 2
        }
    );
    assert_eq!(Codec::<Point>::decode(&Rkyv, &buf[..len]).unwrap(), point());
    let archived = Rkyv::access::<Point>(&buf[..len]).unwrap();
    assert_eq!(archived.z.to_native(), 3);
    assert_eq!(archived.tags.len(), 2);
}

#[test]
fn reads_at_any_alignment() {
    let mut buf = [0u8; 129];
    let len = Rkyv::encode(&point(), &mut buf[1..]).unwrap();
    assert_eq!(Rkyv::decode::<Point>(&buf[1..1 + len]).unwrap(), point());
}

#[test]
fn an_older_version_is_migrated() {
    let mut buf = [0u8; 64];
    let len = Rkyv::encode(&PointV1 { x: 9, y: 8 }, &mut buf).unwrap();
    let migrated = Rkyv::decode::<Point>(&buf[..len]).unwrap();
    assert_eq!((migrated.x, migrated.y, migrated.z), (9, 8, 0));
    // In place, only the current version is readable.
    assert_eq!(
        Rkyv::access::<Point>(&buf[..len]).err(),
        Some(DecodeError::NoMigration {
            schema: "point",
            version: 1,
            current: 2
        })
    );
}

#[test]
fn refusals_are_typed() {
    let mut buf = [0u8; 128];
    let len = Rkyv::encode(&point(), &mut buf).unwrap();
    assert_eq!(
        Rkyv::decode::<Point>(&buf[..3]).unwrap_err(),
        DecodeError::Short { len: 3 }
    );
    assert!(matches!(
        Rkyv::decode::<PointV1>(&buf[..len]).unwrap_err(),
        DecodeError::NewerVersion { version: 2, .. }
    ));
    buf[0] = 8;
    assert!(matches!(
        Rkyv::decode::<Point>(&buf[..len]).unwrap_err(),
        DecodeError::WrongSchema { found: 8, .. }
    ));
    buf[0] = 7;
    assert!(matches!(
        Rkyv::decode::<Point>(&buf[..len - 1]).unwrap_err(),
        DecodeError::Invalid { .. }
    ));
    let mut small = [0u8; 10];
    assert_eq!(
        Rkyv::encode(&point(), &mut small).unwrap_err(),
        EncodeError::TooLarge {
            schema: "point",
            capacity: 10
        }
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = Rkyv::decode::<Point>(&bytes);
        let _ = Rkyv::access::<Point>(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..96), version in 0u16..4,
    ) {
        let mut bytes = vec![7, 0];
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&body);
        let _ = Rkyv::decode::<Point>(&bytes);
    }

    #[test]
    fn every_value_round_trips(x: u32, y: u32, z: u64, tags in prop::collection::vec(any::<u16>(), 0..16)) {
        let value = Point { x, y, z, tags };
        let mut buf = [0u8; 256];
        let len = Rkyv::encode(&value, &mut buf).unwrap();
        prop_assert_eq!(Rkyv::decode::<Point>(&buf[..len]).unwrap(), value);
    }
}
