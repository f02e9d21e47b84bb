//! Plain Lua values (nil, booleans, numbers, byte strings, `json.null` and tables of them)
//! copied between Lua states: a worker's arguments in, its result out. Strings stay bytes,
//! so binary content crosses unchanged; functions, userdata and coroutines cannot cross.

use mlua::{Lua, LuaSerdeExt as _, Value};

/// Tables nested deeper than this are refused (and so are cycles).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plain {
    Nil,
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Vec<u8>),
    Table(Vec<(Plain, Plain)>),
}

impl Plain {
    /// Copies `v` out of a Lua state. `what` names the value in errors.
    pub(crate) fn from_lua(v: &Value, what: &str) -> Result<Plain, String> {
        Plain::from_lua_at(v, what, 0)
    }

    fn from_lua_at(v: &Value, what: &str, depth: usize) -> Result<Plain, String> {
        Ok(match v {
            Value::Nil => Plain::Nil,
            Value::Boolean(b) => Plain::Bool(*b),
            Value::Integer(i) => Plain::Int(*i),
            Value::Number(n) => Plain::Num(*n),
            Value::String(s) => Plain::Str(s.as_bytes().to_vec()),
            Value::LightUserData(p) if p.0.is_null() => Plain::Null,
            Value::Table(t) => {
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "{what} nests tables deeper than {MAX_DEPTH} (or refers to itself)"
                    ));
                }
                let mut out = Vec::new();
                for pair in t.pairs::<Value, Value>() {
                    let (k, val) = pair.map_err(|e| format!("{what}: {e}"))?;
                    out.push((
                        Plain::from_lua_at(&k, what, depth + 1)?,
                        Plain::from_lua_at(&val, what, depth + 1)?,
                    ));
                }
                Plain::Table(out)
            }
            other => {
                return Err(format!(
                    "{what} holds a {}: only nil, booleans, numbers, strings and tables of them \
                     can pass between a scenario and its workers",
                    other.type_name()
                ));
            }
        })
    }

    /// Builds the value in `lua`.
    pub(crate) fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            Plain::Nil => Value::Nil,
            Plain::Null => lua.null(),
            Plain::Bool(b) => Value::Boolean(*b),
            Plain::Int(i) => Value::Integer(*i),
            Plain::Num(n) => Value::Number(*n),
            Plain::Str(s) => Value::String(lua.create_string(s)?),
            Plain::Table(pairs) => {
                let t = lua.create_table_with_capacity(0, pairs.len())?;
                for (k, v) in pairs {
                    t.raw_set(k.to_lua(lua)?, v.to_lua(lua)?)?;
                }
                Value::Table(t)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_between_states() {
        let a = Lua::new();
        let v: Value = a
            .load(r#"return { 1, "two", { x = true, y = 2.5 }, bin = "\0\255", n = json_null }"#)
            .eval()
            .unwrap();
        let p = Plain::from_lua(&v, "result").unwrap();
        let b = Lua::new();
        let back = p.to_lua(&b).unwrap();
        b.globals().set("v", back).unwrap();
        let ok: bool = b
            .load(r#"return v[1] == 1 and v[2] == "two" and v[3].x and v[3].y == 2.5 and v.bin == "\0\255""#)
            .eval()
            .unwrap();
        assert!(ok);
    }

    #[test]
    fn refuses_functions_and_cycles() {
        let a = Lua::new();
        let f: Value = a.load("return { f = function() end }").eval().unwrap();
        let e = Plain::from_lua(&f, "args").unwrap_err();
        assert!(e.contains("holds a function"), "{e}");
        let c: Value = a.load("local t = {} t.t = t return t").eval().unwrap();
        let e = Plain::from_lua(&c, "result").unwrap_err();
        assert!(e.contains("deeper than"), "{e}");
    }
}
