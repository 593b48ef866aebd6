//! librdkafka's built-in partitioners, reproduced bit for bit: a key must go
//! to the partition librdkafka sent it to, or a consumer relying on per-key
//! order would see a key's records split across two partitions.
//!
//! The hashes are librdkafka's `rd_murmur2` (Kafka Java's `Utils.murmur2`),
//! `rd_fnv1a` (Sarama's `NewHashPartitioner`) and `rd_crc32` (IEEE CRC-32),
//! and the choices those of `rd_kafka_msg_partitioner_*` in rdkafka_msg.c.

/// A partitioner, by its librdkafka `partitioner` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Partitioner {
    /// Murmur2 of the key (Java's default); a record with no key at random.
    Murmur2Random,
    /// Murmur2 of the key; no key hashes as an empty one.
    Murmur2,
    /// CRC-32 of the key; no key or an empty key at random.
    ConsistentRandom,
    /// CRC-32 of the key; no key or an empty key to partition 0.
    Consistent,
    /// FNV-1a of the key; a record with no key at random.
    Fnv1aRandom,
    /// FNV-1a of the key; no key hashes as an empty one.
    Fnv1a,
    /// Every record at random, key or not.
    Random,
}

impl Partitioner {
    /// librdkafka's name: "murmur2_random", "murmur2", "consistent_random",
    /// "consistent", "fnv1a_random", "fnv1a", "random".
    pub(crate) fn from_name(name: &str) -> Option<Partitioner> {
        Some(match name {
            "murmur2_random" => Partitioner::Murmur2Random,
            "murmur2" => Partitioner::Murmur2,
            "consistent_random" => Partitioner::ConsistentRandom,
            "consistent" => Partitioner::Consistent,
            "fnv1a_random" => Partitioner::Fnv1aRandom,
            "fnv1a" => Partitioner::Fnv1a,
            "random" => Partitioner::Random,
            _ => return None,
        })
    }

    /// The partition of a record with `key` (None = a record with no key,
    /// librdkafka's NULL key) among `partitions` (> 0); `random` is called
    /// only when the partitioner picks at random, and returns any u32.
    ///
    /// librdkafka does not draw for each such record: one with no key (or,
    /// under `consistent_random`, an empty key) goes to the topic's sticky
    /// partition, drawn again every `sticky.partitioning.linger.ms` (by
    /// default twice `linger.ms`), and `random` is where a caller keeps
    /// that; only the `random` partitioner, given a key, draws afresh for
    /// each record. librdkafka also draws a second time when the first draw
    /// has no leader, which is the caller's too. A `partitions` of 0 or
    /// less, a bug, gives 0.
    pub(crate) fn partition(self, key: Option<&[u8]>, partitions: i32, random: impl FnOnce() -> u32) -> i32 {
        debug_assert!(partitions > 0, "no partitions to choose from");
        let count = partitions.max(1).unsigned_abs();
        // librdkafka hashes a NULL key as zero bytes where it does not
        // draw at random (`rd_murmur2(NULL, 0)`, and likewise).
        let bytes = key.unwrap_or_default();
        let hash = match self {
            Partitioner::Random => random(),
            Partitioner::Murmur2Random if key.is_none() => random(),
            Partitioner::Fnv1aRandom if key.is_none() => random(),
            // The one that tests the length, not the pointer: an empty key
            // is spread too.
            Partitioner::ConsistentRandom if bytes.is_empty() => random(),
            // Java's `Utils.toPositive`: the sign bit dropped, not negated.
            Partitioner::Murmur2 | Partitioner::Murmur2Random => murmur2(bytes) & 0x7fff_ffff,
            Partitioner::Consistent | Partitioner::ConsistentRandom => crc32(bytes),
            Partitioner::Fnv1a | Partitioner::Fnv1aRandom => fnv1a(bytes),
        };
        // In C the `uint32_t % int32_t` is unsigned, as here; the result is
        // below `partitions`, so it fits an i32.
        (hash % count) as i32
    }
}

/// Kafka Java's `Utils.murmur2` / librdkafka's `rd_murmur2`: MurmurHash2,
/// little-endian and alignment-neutral, with Kafka's seed.
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Both hash the length as 32 bits (a Java int, a C cast).
    let mut h = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// librdkafka's `rd_fnv1a`: 32-bit FNV-1a, then the absolute value of the
/// hash read as an `int32_t`, which is what Sarama's hash partitioner does.
fn fnv1a(data: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    let h = data.iter().fold(OFFSET, |h, &byte| (h ^ u32::from(byte)).wrapping_mul(PRIME));
    // Negative as an int32_t: negated. INT32_MIN negates to itself in C
    // (two's complement), and so here: 0x8000_0000 stays.
    if h & 0x8000_0000 != 0 {
        h.wrapping_neg()
    } else {
        h
    }
}

/// librdkafka's `rd_crc32`: the IEEE CRC-32 (reflected 0x04c11db7, all ones
/// in and out), as zlib's `crc32` and Ethernet compute it.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0, |crc, &byte| CRC32_TABLE[usize::from(crc as u8 ^ byte)] ^ (crc >> 8))
}

/// The byte-at-a-time table of the reflected polynomial, built at compile time.
static CRC32_TABLE: [u32; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Partitioner; 7] = [
        Partitioner::Murmur2Random,
        Partitioner::Murmur2,
        Partitioner::ConsistentRandom,
        Partitioner::Consistent,
        Partitioner::Fnv1aRandom,
        Partitioner::Fnv1a,
        Partitioner::Random,
    ];

    /// The keys of librdkafka's `unittest_murmur2` and `unittest_fnv1a`
    /// (which test unaligned pointers too: same bytes here).
    const UNITTEST_KEYS: [Option<&[u8]>; 12] = [
        Some(b"kafka"),
        Some(b"giberish123456789"),
        Some(b"1234"),
        Some(b"234"),
        Some(b"34"),
        Some(b"4"),
        Some(b"PreAmbleWillBeRemoved,ThePrePartThatIs"),
        Some(b"reAmbleWillBeRemoved,ThePrePartThatIs"),
        Some(b"eAmbleWillBeRemoved,ThePrePartThatIs"),
        Some(b"AmbleWillBeRemoved,ThePrePartThatIs"),
        Some(b""),
        None,
    ];

    fn never() -> u32 {
        panic!("a keyed partitioner drew at random")
    }

    #[test]
    fn names_round_trip() {
        let names = [
            "murmur2_random",
            "murmur2",
            "consistent_random",
            "consistent",
            "fnv1a_random",
            "fnv1a",
            "random",
        ];
        for (name, partitioner) in names.iter().zip(ALL) {
            assert_eq!(Partitioner::from_name(name), Some(partitioner));
        }
        assert_eq!(Partitioner::from_name("Murmur2"), None);
        assert_eq!(Partitioner::from_name(""), None);
    }

    /// rdmurmur2.c's `unittest_murmur2`, from Kafka Java.
    #[test]
    fn murmur2_librdkafka_unittest() {
        let expected: [u32; 12] = [
            0xd067cf64, 0x8f552b0c, 0x9fc97b14, 0xe7c009ca, 0x873930da, 0x5a4b5ca1, 0x78424f1c, 0x4a62b377,
            0xe0e4e09e, 0x62b8b43f, 0x106e08d9, 0x106e08d9,
        ];
        for (key, want) in UNITTEST_KEYS.iter().zip(expected) {
            assert_eq!(murmur2(key.unwrap_or_default()), want, "{key:?}");
        }
    }

    /// Kafka's `UtilsTest.testMurmur2` (clients/…/common/utils/UtilsTest.java).
    #[test]
    fn murmur2_kafka_java() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want as u32, "{:?}", String::from_utf8_lossy(key));
            // Java's partition: `toPositive(murmur2(key)) % numPartitions`.
            for partitions in [1, 3, 7, 10, 17, 100] {
                let java = (want & 0x7fffffff) % partitions;
                assert_eq!(Partitioner::Murmur2Random.partition(Some(key), partitions, never), java);
                assert_eq!(Partitioner::Murmur2.partition(Some(key), partitions, never), java);
            }
        }
    }

    /// rdfnv1a.c's `unittest_fnv1a`, from Go's hash/fnv.
    #[test]
    fn fnv1a_librdkafka_unittest() {
        let expected: [u32; 12] = [
            0xd33c4e1, 0x77a58295, 0x23bdd03, 0x2dea3cd2, 0x740fa83e, 0x310ca263, 0x65cbd69c, 0x6e49c79a,
            0x69eed356, 0x6abcc023, 0x7ee3623b, 0x7ee3623b,
        ];
        for (key, want) in UNITTEST_KEYS.iter().zip(expected) {
            assert_eq!(fnv1a(key.unwrap_or_default()), want, "{key:?}");
        }
    }

    /// A key whose FNV-1a is 0x8000_0000, INT32_MIN, which has no positive
    /// counterpart: librdkafka returns it unchanged.
    #[test]
    fn fnv1a_int32_min() {
        assert_eq!(fnv1a(b"\x02\x57\x96\xdf\x4d"), 0x8000_0000);
        assert_eq!(
            Partitioner::Fnv1a.partition(Some(b"\x02\x57\x96\xdf\x4d"), 7, never),
            (0x8000_0000_u32 % 7) as i32
        );
    }

    #[test]
    fn crc32_check_values() {
        assert_eq!(crc32(b""), 0);
        // The CRC catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414f_a339);
    }

    /// tests/0048-partitioner.c's expectations, for its 7 and 17
    /// partitions; `None` there is "random".
    #[test]
    fn librdkafka_partitioner_test() {
        let keys: [Option<&[u8]>; 5] = [
            None,
            Some(b""),
            Some(b"23456"),
            Some(b"this is another string with more length to it perhaps"),
            Some(b"hejsan"),
        ];
        let table: [(Partitioner, [Option<u32>; 5]); 7] = [
            (Partitioner::Random, [None; 5]),
            (
                Partitioner::Consistent,
                [Some(0), Some(0), Some(0xb1b451d7), Some(0xb0150df7), Some(0xd077037e)],
            ),
            (
                Partitioner::ConsistentRandom,
                [None, None, Some(0xb1b451d7), Some(0xb0150df7), Some(0xd077037e)],
            ),
            (
                Partitioner::Murmur2,
                [Some(0x106e08d9), Some(0x106e08d9), Some(0x058d780f), Some(0x4f7703da), Some(0x5ec19395)],
            ),
            (
                Partitioner::Murmur2Random,
                [None, Some(0x106e08d9), Some(0x058d780f), Some(0x4f7703da), Some(0x5ec19395)],
            ),
            (
                Partitioner::Fnv1a,
                [Some(0x7ee3623b), Some(0x7ee3623b), Some(0x27e6f469), Some(0x155e3e5f), Some(0x17b1e27a)],
            ),
            (
                Partitioner::Fnv1aRandom,
                [None, Some(0x7ee3623b), Some(0x27e6f469), Some(0x155e3e5f), Some(0x17b1e27a)],
            ),
        ];
        for (partitioner, expected) in table {
            for (key, want) in keys.iter().zip(expected) {
                for partitions in [7, 17] {
                    let mut drew = false;
                    let got = partitioner.partition(*key, partitions, || {
                        drew = true;
                        partitions as u32 + 3
                    });
                    match want {
                        Some(hash) => {
                            assert!(!drew, "{partitioner:?} drew for {key:?}");
                            assert_eq!(got, (hash % partitions as u32) as i32, "{partitioner:?} {key:?}");
                        }
                        None => {
                            assert!(drew, "{partitioner:?} hashed {key:?}");
                            assert_eq!(got, 3, "a draw is taken modulo the partitions");
                        }
                    }
                }
            }
        }
    }

    /// The partition is in 0..partitions for every partitioner, whatever the
    /// hash or draw, the extremes included.
    #[test]
    fn partition_in_range() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            // xorshift32: deterministic, and it covers high-bit values.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut keys: Vec<Option<Vec<u8>>> =
            vec![None, Some(Vec::new()), Some(b"\x02\x57\x96\xdf\x4d".to_vec())];
        for len in 0..64 {
            keys.push(Some((0..len).map(|_| next() as u8).collect()));
        }
        for partitions in [1, 2, 3, 7, 16, 17, 1000, i32::MAX - 1, i32::MAX] {
            for partitioner in ALL {
                for key in &keys {
                    for draw in [0, 1, u32::MAX, 0x8000_0000, 0x7fff_ffff, next()] {
                        let p = partitioner.partition(key.as_deref(), partitions, || draw);
                        assert!((0..partitions).contains(&p), "{partitioner:?} {key:?} {partitions}: {p}");
                    }
                }
            }
        }
    }

    /// A key always lands on the same partition.
    #[test]
    fn keys_are_stable() {
        for partitioner in ALL.into_iter().filter(|p| *p != Partitioner::Random) {
            let first = partitioner.partition(Some(b"user-42"), 12, never);
            for _ in 0..3 {
                assert_eq!(partitioner.partition(Some(b"user-42"), 12, never), first);
            }
        }
    }
}
