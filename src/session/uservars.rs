//! User variables carried by value when a session moves to another backend (a drain, a
//! rebalance): MariaDB lists a session's variables with their types in
//! `information_schema.USER_VARIABLES`; sluice reads them on the backend the session leaves and
//! makes them again on the next one with one `SET`, each with the type the server gave it:
//!
//! | `VARIABLE_TYPE` | made again as |
//! |---|---|
//! | `INT` | the integer |
//! | `INT UNSIGNED` | `CAST(n AS UNSIGNED)` |
//! | `DECIMAL` | the decimal literal as listed (its scale kept: `2.50`) |
//! | `VARCHAR` | `CONVERT(X'…' USING charset) COLLATE collation`, the bytes and collation read with `HEX()` and `COLLATION()` |
//! | a NULL value | `NULL` (the server lists it as a binary VARCHAR, which `SET @v = NULL` makes) |
//!
//! A `DOUBLE` (its text is not exact) or any other type cannot be carried: the session stays
//! where it is, pinned as before. Pure: the caller runs the statements.

/// One variable's value, as it will be made again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Int(i64),
    Unsigned(u64),
    Decimal(String),
    /// Read with `HEX()` and `COLLATION()` in a second statement.
    Text,
}

/// What `USER_VARIABLES` listed: each variable's name and how to make it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    vars: Vec<(String, Value)>,
}

/// Lists the session's variables with their types and values.
pub const LIST: &str =
    "SELECT VARIABLE_NAME, VARIABLE_TYPE, VARIABLE_VALUE FROM information_schema.USER_VARIABLES";

/// `@name`, quoted.
fn var(name: &str) -> String {
    format!("@`{}`", name.replace('`', "``"))
}

/// A decimal literal as the server lists one: digits, at most one point, an optional sign.
fn is_decimal(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let frac = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// The plan for `rows` of [`LIST`] (name, type, value), or `None` when a variable cannot be
/// carried exactly.
pub fn plan(rows: &[Vec<Option<String>>]) -> Option<Plan> {
    let mut vars = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(Some(name)), Some(Some(ty)), Some(value)) = (row.first(), row.get(1), row.get(2))
        else {
            return None;
        };
        let v = match (ty.as_str(), value) {
            (_, None) => Value::Null,
            ("INT", Some(v)) => Value::Int(v.parse().ok()?),
            ("INT UNSIGNED", Some(v)) => Value::Unsigned(v.parse().ok()?),
            ("DECIMAL", Some(v)) if is_decimal(v) => Value::Decimal(v.clone()),
            ("VARCHAR", Some(_)) => Value::Text,
            _ => return None,
        };
        vars.push((name.clone(), v));
    }
    Some(Plan { vars })
}

impl Plan {
    /// No variables: nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The statement that reads the string variables' bytes and collations (`None`: there is
    /// none): two columns per string variable, in order.
    pub fn strings_query(&self) -> Option<String> {
        let cols: Vec<String> = self
            .vars
            .iter()
            .filter(|(_, v)| *v == Value::Text)
            .map(|(n, _)| format!("HEX({0}), COLLATION({0})", var(n)))
            .collect();
        (!cols.is_empty()).then(|| format!("SELECT {}", cols.join(", ")))
    }

    /// The `SET` that makes every variable again, given the row [`Plan::strings_query`]
    /// answered (empty when there was none); `None` when that row does not fit.
    pub fn set_sql(&self, strings: &[Option<String>]) -> Option<String> {
        let mut s = strings.chunks(2);
        let mut sets = Vec::with_capacity(self.vars.len());
        for (name, v) in &self.vars {
            let value = match v {
                Value::Null => "NULL".to_string(),
                Value::Int(n) => n.to_string(),
                Value::Unsigned(n) => format!("CAST({n} AS UNSIGNED)"),
                Value::Decimal(d) => d.clone(),
                Value::Text => {
                    let [Some(hex), Some(collation)] = s.next()? else {
                        return None;
                    };
                    text(hex, collation)?
                }
            };
            sets.push(format!("{} = {value}", var(name)));
        }
        Some(format!("SET {}", sets.join(", ")))
    }
}

/// A string with the bytes `hex` (as `HEX()` gives them) in `collation` (as `COLLATION()` names
/// it), as an expression; `None` when either is not what those functions return.
pub fn text(hex: &str, collation: &str) -> Option<String> {
    let clean = |t: &str, ok: fn(u8) -> bool| !t.is_empty() && t.bytes().all(ok);
    if !(hex.is_empty() || clean(hex, |b| b.is_ascii_hexdigit()))
        || !clean(collation, |b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    if collation == "binary" {
        // (`COLLATE binary` is not valid SQL.)
        return Some(format!("CAST(X'{hex}' AS BINARY)"));
    }
    let charset = collation.split('_').next().unwrap_or_default();
    Some(format!(
        "CONVERT(X'{hex}' USING {charset}) COLLATE {collation}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ty: &str, value: Option<&str>) -> Vec<Option<String>> {
        vec![Some(name.into()), Some(ty.into()), value.map(Into::into)]
    }

    #[test]
    fn each_type_is_made_again_as_the_server_typed_it() {
        let p = plan(&[
            row("a", "INT", Some("-5")),
            row("u", "INT UNSIGNED", Some("18446744073709551615")),
            row("d", "DECIMAL", Some("2.50")),
            row("n", "VARCHAR", None),
            row("s", "VARCHAR", Some("héllo")),
            row("odd`name", "VARCHAR", Some("")),
        ])
        .unwrap();
        assert_eq!(
            p.strings_query().unwrap(),
            "SELECT HEX(@`s`), COLLATION(@`s`), HEX(@`odd``name`), COLLATION(@`odd``name`)"
        );
        let strings = [
            Some("68C3A96C6C6F".to_string()),
            Some("latin1_bin".to_string()),
            Some(String::new()),
            Some("binary".to_string()),
        ];
        assert_eq!(
            p.set_sql(&strings).unwrap(),
            "SET @`a` = -5, @`u` = CAST(18446744073709551615 AS UNSIGNED), @`d` = 2.50, @`n` = NULL, \
             @`s` = CONVERT(X'68C3A96C6C6F' USING latin1) COLLATE latin1_bin, \
             @`odd``name` = CAST(X'' AS BINARY)"
        );
    }

    #[test]
    fn what_cannot_be_carried_exactly_is_not() {
        for bad in [
            row("f", "DOUBLE", Some("1000")),
            row("x", "ROW", Some("?")),
            row("i", "INT", Some("1.5")),
            row("d", "DECIMAL", Some("1e3")),
            row("d", "DECIMAL", Some("1.")),
        ] {
            assert_eq!(plan(std::slice::from_ref(&bad)), None, "{bad:?}");
        }
        assert_eq!(plan(&[vec![Some("a".into())]]), None);
        // The strings row must fit, and be hex and a collation name.
        let p = plan(&[row("s", "VARCHAR", Some("x"))]).unwrap();
        assert_eq!(p.set_sql(&[]), None);
        assert_eq!(
            p.set_sql(&[Some("ZZ".into()), Some("latin1_bin".into())]),
            None
        );
        assert_eq!(
            p.set_sql(&[Some("78".into()), Some("x'; DROP".into())]),
            None
        );
        assert_eq!(p.set_sql(&[Some("78".into()), None]), None);
    }

    #[test]
    fn no_variables() {
        let p = plan(&[]).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.strings_query(), None);
    }
}
