//! Type strings in manifests: `long`, `decimal(12, 2)`, `fixed(16)`, `struct`,
//! `list`, `map`, and the shorthands `list<T>` / `map<K, V>`.

use std::fmt;

use iceberg::spec::PrimitiveType;

/// A parsed type string. `Struct`, `List(None)` and `Map(None)` take their parts from
/// the column's `fields`, `element`, `key` and `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeExpr {
    Primitive(PrimitiveType),
    Struct,
    List(Option<Box<TypeExpr>>),
    Map(Option<(Box<TypeExpr>, Box<TypeExpr>)>),
}

impl fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeExpr::Primitive(p) => write!(f, "{}", primitive_name(p)),
            TypeExpr::Struct => write!(f, "struct"),
            TypeExpr::List(None) => write!(f, "list"),
            TypeExpr::List(Some(e)) => write!(f, "list<{e}>"),
            TypeExpr::Map(None) => write!(f, "map"),
            TypeExpr::Map(Some((k, v))) => write!(f, "map<{k}, {v}>"),
        }
    }
}

/// The manifest spelling of a primitive type (`decimal(12, 2)`, `fixed(16)`).
pub fn primitive_name(p: &PrimitiveType) -> String {
    match p {
        PrimitiveType::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
        PrimitiveType::Fixed(n) => format!("fixed({n})"),
        other => other.to_string(),
    }
}

/// Parses a type string; the error says what was expected.
pub fn parse(input: &str) -> Result<TypeExpr, String> {
    let s = input.trim();
    let lower = s.to_ascii_lowercase();
    if let Some(inner) = strip_generic(&lower, "list") {
        return Ok(TypeExpr::List(Some(Box::new(parse(inner)?))));
    }
    if let Some(inner) = strip_generic(&lower, "map") {
        let (k, v) = split_top_level_comma(inner)
            .ok_or_else(|| format!("map type `{s}` needs a key and a value type: map<K, V>"))?;
        return Ok(TypeExpr::Map(Some((
            Box::new(parse(k)?),
            Box::new(parse(v)?),
        ))));
    }
    if let Some(args) = strip_call(&lower, "decimal") {
        let (p, sc) = args.split_once(',').ok_or_else(|| {
            format!("decimal type `{s}` needs precision and scale: decimal(P, S)")
        })?;
        let precision: u32 = p
            .trim()
            .parse()
            .map_err(|_| format!("decimal precision in `{s}` is not a number"))?;
        let scale: u32 = sc
            .trim()
            .parse()
            .map_err(|_| format!("decimal scale in `{s}` is not a number"))?;
        if !(1..=38).contains(&precision) {
            return Err(format!(
                "decimal precision must be 1..=38, got {precision} in `{s}`"
            ));
        }
        if scale > precision {
            return Err(format!(
                "decimal scale {scale} exceeds precision {precision} in `{s}`"
            ));
        }
        return Ok(TypeExpr::Primitive(PrimitiveType::Decimal {
            precision,
            scale,
        }));
    }
    if let Some(args) = strip_call(&lower, "fixed") {
        let n: u64 = args
            .trim()
            .parse()
            .map_err(|_| format!("fixed length in `{s}` is not a number"))?;
        if n == 0 {
            return Err(format!("fixed length must be positive in `{s}`"));
        }
        return Ok(TypeExpr::Primitive(PrimitiveType::Fixed(n)));
    }
    let p = match lower.as_str() {
        "boolean" => PrimitiveType::Boolean,
        "int" => PrimitiveType::Int,
        "long" => PrimitiveType::Long,
        "float" => PrimitiveType::Float,
        "double" => PrimitiveType::Double,
        "date" => PrimitiveType::Date,
        "time" => PrimitiveType::Time,
        "timestamp" => PrimitiveType::Timestamp,
        "timestamptz" => PrimitiveType::Timestamptz,
        "timestamp_ns" => PrimitiveType::TimestampNs,
        "timestamptz_ns" => PrimitiveType::TimestamptzNs,
        "string" => PrimitiveType::String,
        "uuid" => PrimitiveType::Uuid,
        "binary" => PrimitiveType::Binary,
        "struct" => return Ok(TypeExpr::Struct),
        "list" => return Ok(TypeExpr::List(None)),
        "map" => return Ok(TypeExpr::Map(None)),
        _ => {
            let hint = match lower.as_str() {
                "integer" | "int32" => " (did you mean `int`?)",
                "bigint" | "int64" => " (did you mean `long`?)",
                "bool" => " (did you mean `boolean`?)",
                "varchar" | "text" | "str" => " (did you mean `string`?)",
                "real" | "float32" => " (did you mean `float`?)",
                "float64" => " (did you mean `double`?)",
                "datetime" => " (did you mean `timestamp` or `timestamptz`?)",
                "bytes" | "blob" => " (did you mean `binary`?)",
                "decimal" => " (decimal needs precision and scale: decimal(P, S))",
                "fixed" => " (fixed needs a length: fixed(N))",
                _ => "",
            };
            return Err(format!(
                "unknown type `{s}`{hint}; expected boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, string, uuid, binary, fixed(N), struct, list, map, list<T> or map<K,V>"
            ));
        }
    };
    Ok(TypeExpr::Primitive(p))
}

fn strip_generic<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?
        .trim_start()
        .strip_prefix('<')?
        .strip_suffix('>')
}

fn strip_call<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn split_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_primitives_and_shorthands() {
        assert_eq!(
            parse(" Decimal( 12 , 2 ) ").unwrap(),
            TypeExpr::Primitive(PrimitiveType::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            parse("map<string, list<decimal(10,2)>>")
                .unwrap()
                .to_string(),
            "map<string, list<decimal(10, 2)>>"
        );
        assert_eq!(parse("fixed(16)").unwrap().to_string(), "fixed(16)");
    }

    #[test]
    fn rejects_with_reason() {
        assert!(parse("bigint").unwrap_err().contains("did you mean `long`"));
        assert!(parse("decimal(40,2)").unwrap_err().contains("1..=38"));
        assert!(parse("decimal(4,6)")
            .unwrap_err()
            .contains("exceeds precision"));
        assert!(parse("map<string>")
            .unwrap_err()
            .contains("key and a value"));
        assert!(parse("fixed(0)").is_err());
    }
}
