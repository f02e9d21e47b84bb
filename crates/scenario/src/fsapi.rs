//! The `fs` table: file operations on paths (inside a mount or anywhere), and open file
//! handles. Every error is raised as `file.lua:LINE: OP PATH: DESCRIPTION (ERRNO)`, so
//! `assert_error(f, "ENOENT")` and `errmsg(err):find("EROFS")` work.

use std::ffi::OsStr;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use mlua::{Lua, LuaString, MetaMethod, Table, UserData, UserDataMethods, Value};

/// Where the Lua code calling into Rust is: `name.lua:LINE: `, or empty.
pub(crate) fn lua_where(lua: &Lua) -> String {
    for level in 1..16 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source();
            let file = src.short_src.map(std::borrow::Cow::into_owned).unwrap_or_default();
            // Rust functions and the prelude's helpers are not where the script is.
            if src.what == "C" || file == "prelude" {
                return None;
            }
            Some(match d.current_line() {
                Some(line) => format!("{file}:{line}: "),
                None => format!("{file}: "),
            })
        });
        match found {
            None => return String::new(),
            Some(Some(w)) => return w,
            Some(None) => {}
        }
    }
    String::new()
}

/// A runtime error raised at the caller's location.
pub(crate) fn lua_err(lua: &Lua, msg: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("{}{msg}", lua_where(lua)))
}

/// The symbolic name of an errno, for messages scripts can match.
pub(crate) fn errno_name(n: i32) -> Option<&'static str> {
    Some(match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINTR => "EINTR",
        _ => return None,
    })
}

/// `No such file or directory (ENOENT)`.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let text = std::io::Error::from_raw_os_error(n).to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            match errno_name(n) {
                Some(name) => format!("{text} ({name})"),
                None => format!("{text} (errno {n})"),
            }
        }
        None => e.to_string(),
    }
}

fn io_err(lua: &Lua, op: &str, path: &Path, e: &std::io::Error) -> mlua::Error {
    lua_err(lua, format!("{op} {}: {}", path.display(), describe_io(e)))
}

fn path_of(s: &LuaString) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&s.as_bytes()))
}

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "unknown"
    }
}

fn time(secs: i64, nsec: i64) -> f64 {
    secs as f64 + nsec as f64 / 1e9
}

fn stat_table(lua: &Lua, m: &std::fs::Metadata) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("kind", kind(m.file_type()))?;
    t.set("size", m.size())?;
    t.set("mode", m.mode() & 0o7777)?;
    t.set("ino", m.ino())?;
    t.set("nlink", m.nlink())?;
    t.set("uid", m.uid())?;
    t.set("gid", m.gid())?;
    t.set("blocks", m.blocks())?;
    t.set("blksize", m.blksize())?;
    t.set("atime", time(m.atime(), m.atime_nsec()))?;
    t.set("mtime", time(m.mtime(), m.mtime_nsec()))?;
    t.set("ctime", time(m.ctime(), m.ctime_nsec()))?;
    Ok(t)
}

/// `{ sync = true }`: fsync before closing.
fn wants_sync(opts: Option<&Table>) -> mlua::Result<bool> {
    Ok(match opts {
        Some(t) => t.get::<Option<bool>>("sync")?.unwrap_or(false),
        None => false,
    })
}

fn write_file(path: &Path, data: &[u8], append: bool, sync: bool) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    let mut f = o.open(path)?;
    f.write_all(data)?;
    if sync {
        f.sync_all()?;
    }
    // Dropping closes; a close error is reported by flush(2), which std ignores, so the
    // durability points a script can rely on are `sync` and the next `fs.fsync`.
    drop(f);
    Ok(())
}

/// An open file: `fs.open(path, mode)`.
#[derive(Debug)]
pub(crate) struct File {
    f: Option<std::fs::File>,
    path: PathBuf,
}

impl File {
    fn get(&mut self, lua: &Lua) -> mlua::Result<&mut std::fs::File> {
        let path = self.path.display().to_string();
        self.f.as_mut().ok_or_else(|| lua_err(lua, format!("{path} is closed")))
    }
}

impl UserData for File {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("read", |lua, this, n: Option<usize>| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            let mut buf = Vec::new();
            match n {
                None => {
                    f.read_to_end(&mut buf).map_err(|e| io_err(lua, "read", &path, &e))?;
                }
                Some(n) => {
                    let mut take = f.take(n as u64);
                    take.read_to_end(&mut buf).map_err(|e| io_err(lua, "read", &path, &e))?;
                    if buf.is_empty() && n > 0 {
                        return Ok(Value::Nil);
                    }
                }
            }
            Ok(Value::String(lua.create_string(&buf)?))
        });
        m.add_method_mut("write", |lua, this, data: LuaString| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            f.write_all(&data.as_bytes()).map_err(|e| io_err(lua, "write", &path, &e))
        });
        m.add_method_mut("seek", |lua, this, (offset, whence): (i64, Option<String>)| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            let pos = match whence.as_deref().unwrap_or("set") {
                "set" => SeekFrom::Start(u64::try_from(offset).map_err(|_| {
                    lua_err(lua, format!("seek {}: negative offset {offset}", path.display()))
                })?),
                "cur" => SeekFrom::Current(offset),
                "end" => SeekFrom::End(offset),
                other => {
                    return Err(lua_err(
                        lua,
                        format!("seek: whence must be \"set\", \"cur\" or \"end\", not {other:?}"),
                    ));
                }
            };
            f.seek(pos).map_err(|e| io_err(lua, "seek", &path, &e))
        });
        m.add_method_mut("fsync", |lua, this, ()| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            f.sync_all().map_err(|e| io_err(lua, "fsync", &path, &e))
        });
        m.add_method_mut("truncate", |lua, this, size: u64| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            f.set_len(size).map_err(|e| io_err(lua, "truncate", &path, &e))
        });
        m.add_method_mut("stat", |lua, this, ()| {
            let path = this.path.clone();
            let f = this.get(lua)?;
            let md = f.metadata().map_err(|e| io_err(lua, "stat", &path, &e))?;
            stat_table(lua, &md)
        });
        m.add_method_mut("close", |_, this, ()| {
            this.f = None;
            Ok(())
        });
        m.add_meta_method_mut(MetaMethod::Close, |_, this, ()| {
            this.f = None;
            Ok(())
        });
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!(
                "file({}{})",
                this.path.display(),
                if this.f.is_some() { "" } else { ", closed" }
            ))
        });
    }
}

fn open(path: &Path, mode: &str) -> Option<std::io::Result<std::fs::File>> {
    let mut o = std::fs::OpenOptions::new();
    match mode {
        "r" => o.read(true),
        "r+" => o.read(true).write(true),
        "w" => o.write(true).create(true).truncate(true),
        "w+" => o.read(true).write(true).create(true).truncate(true),
        "a" => o.append(true).create(true),
        "a+" => o.read(true).append(true).create(true),
        "x" => o.write(true).create_new(true),
        "x+" => o.read(true).write(true).create_new(true),
        _ => return None,
    };
    Some(o.open(path))
}

/// Sizes of every file under `path` (not following symlinks), in bytes.
pub(crate) fn du(path: &Path) -> std::io::Result<u64> {
    let md = std::fs::symlink_metadata(path)?;
    if !md.is_dir() {
        return Ok(md.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        match du(&entry.path()) {
            Ok(n) => total += n,
            // Removed meanwhile (the daemon's temp files come and go).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Builds the `fs` table.
pub(crate) fn table(lua: &Lua) -> mlua::Result<Table> {
    let fs = lua.create_table()?;
    fs.set(
        "write",
        lua.create_function(|lua, (p, data, opts): (LuaString, LuaString, Option<Table>)| {
            let path = path_of(&p);
            write_file(&path, &data.as_bytes(), false, wants_sync(opts.as_ref())?)
                .map_err(|e| io_err(lua, "write", &path, &e))
        })?,
    )?;
    fs.set(
        "append",
        lua.create_function(|lua, (p, data, opts): (LuaString, LuaString, Option<Table>)| {
            let path = path_of(&p);
            write_file(&path, &data.as_bytes(), true, wants_sync(opts.as_ref())?)
                .map_err(|e| io_err(lua, "append", &path, &e))
        })?,
    )?;
    fs.set(
        "read",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let data = std::fs::read(&path).map_err(|e| io_err(lua, "read", &path, &e))?;
            lua.create_string(&data)
        })?,
    )?;
    fs.set(
        "mkdir",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            std::fs::create_dir(&path).map_err(|e| io_err(lua, "mkdir", &path, &e))
        })?,
    )?;
    fs.set(
        "mkdir_all",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            std::fs::create_dir_all(&path).map_err(|e| io_err(lua, "mkdir_all", &path, &e))
        })?,
    )?;
    fs.set(
        "rename",
        lua.create_function(|lua, (a, b): (LuaString, LuaString)| {
            let (from, to) = (path_of(&a), path_of(&b));
            std::fs::rename(&from, &to).map_err(|e| {
                lua_err(
                    lua,
                    format!("rename {} -> {}: {}", from.display(), to.display(), describe_io(&e)),
                )
            })
        })?,
    )?;
    fs.set(
        "remove",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let md =
                std::fs::symlink_metadata(&path).map_err(|e| io_err(lua, "remove", &path, &e))?;
            if md.is_dir() { std::fs::remove_dir(&path) } else { std::fs::remove_file(&path) }
                .map_err(|e| io_err(lua, "remove", &path, &e))
        })?,
    )?;
    fs.set(
        "remove_all",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let md = std::fs::symlink_metadata(&path)
                .map_err(|e| io_err(lua, "remove_all", &path, &e))?;
            if md.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
                .map_err(|e| io_err(lua, "remove_all", &path, &e))
        })?,
    )?;
    fs.set(
        "list",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let t = lua.create_table()?;
            let rd = std::fs::read_dir(&path).map_err(|e| io_err(lua, "list", &path, &e))?;
            for (i, entry) in rd.enumerate() {
                let entry = entry.map_err(|e| io_err(lua, "list", &path, &e))?;
                t.raw_set(i + 1, lua.create_string(entry.file_name().into_vec())?)?;
            }
            Ok(t)
        })?,
    )?;
    fs.set(
        "stat",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let md = std::fs::metadata(&path).map_err(|e| io_err(lua, "stat", &path, &e))?;
            stat_table(lua, &md)
        })?,
    )?;
    fs.set(
        "lstat",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let md =
                std::fs::symlink_metadata(&path).map_err(|e| io_err(lua, "lstat", &path, &e))?;
            stat_table(lua, &md)
        })?,
    )?;
    fs.set(
        "exists",
        lua.create_function(|_, p: LuaString| Ok(std::fs::symlink_metadata(path_of(&p)).is_ok()))?,
    )?;
    fs.set(
        "truncate",
        lua.create_function(|lua, (p, size): (LuaString, u64)| {
            let path = path_of(&p);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(lua, "truncate", &path, &e))?;
            f.set_len(size).map_err(|e| io_err(lua, "truncate", &path, &e))
        })?,
    )?;
    fs.set(
        "symlink",
        lua.create_function(|lua, (target, p): (LuaString, LuaString)| {
            let path = path_of(&p);
            std::os::unix::fs::symlink(path_of(&target), &path)
                .map_err(|e| io_err(lua, "symlink", &path, &e))
        })?,
    )?;
    fs.set(
        "readlink",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let t = std::fs::read_link(&path).map_err(|e| io_err(lua, "readlink", &path, &e))?;
            lua.create_string(t.into_os_string().into_vec())
        })?,
    )?;
    fs.set(
        "fsync",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let f = std::fs::File::open(&path).map_err(|e| io_err(lua, "fsync", &path, &e))?;
            f.sync_all().map_err(|e| io_err(lua, "fsync", &path, &e))
        })?,
    )?;
    fs.set(
        "open",
        lua.create_function(|lua, (p, mode): (LuaString, Option<String>)| {
            let path = path_of(&p);
            let mode = mode.unwrap_or_else(|| "r".to_owned());
            let Some(r) = open(&path, &mode) else {
                return Err(lua_err(
                    lua,
                    format!(
                        "open {}: mode must be r, r+, w, w+, a, a+, x or x+, not {mode:?}",
                        path.display()
                    ),
                ));
            };
            let f = r.map_err(|e| io_err(lua, "open", &path, &e))?;
            Ok(File { f: Some(f), path })
        })?,
    )?;
    fs.set(
        "du",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            du(&path).map_err(|e| io_err(lua, "du", &path, &e))
        })?,
    )?;
    xattr_functions(lua, &fs)?;
    Ok(fs)
}

fn xattr_functions(lua: &Lua, fs: &Table) -> mlua::Result<()> {
    fs.set(
        "getxattr",
        lua.create_function(|lua, (p, name): (LuaString, LuaString)| {
            let path = path_of(&p);
            let mut buf = vec![0u8; 65_536];
            match rustix::fs::getxattr(&path, &*name.as_bytes(), &mut buf[..]) {
                Ok(n) => Ok(Value::String(lua.create_string(&buf[..n])?)),
                Err(rustix::io::Errno::NODATA) => Ok(Value::Nil),
                Err(e) => Err(io_err(lua, "getxattr", &path, &e.into())),
            }
        })?,
    )?;
    fs.set(
        "setxattr",
        lua.create_function(
            |lua, (p, name, value, flag): (LuaString, LuaString, LuaString, Option<String>)| {
                let path = path_of(&p);
                let flags = match flag.as_deref() {
                    None => rustix::fs::XattrFlags::empty(),
                    Some("create") => rustix::fs::XattrFlags::CREATE,
                    Some("replace") => rustix::fs::XattrFlags::REPLACE,
                    Some(other) => {
                        return Err(lua_err(
                            lua,
                            format!(
                                "setxattr: flag must be \"create\" or \"replace\", not {other:?}"
                            ),
                        ));
                    }
                };
                rustix::fs::setxattr(&path, &*name.as_bytes(), &value.as_bytes(), flags)
                    .map_err(|e| io_err(lua, "setxattr", &path, &e.into()))
            },
        )?,
    )?;
    fs.set(
        "listxattr",
        lua.create_function(|lua, p: LuaString| {
            let path = path_of(&p);
            let mut buf = vec![0u8; 65_536];
            let n = rustix::fs::listxattr(&path, &mut buf[..])
                .map_err(|e| io_err(lua, "listxattr", &path, &e.into()))?;
            let t = lua.create_table()?;
            for (i, name) in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).enumerate() {
                t.raw_set(i + 1, lua.create_string(name)?)?;
            }
            Ok(t)
        })?,
    )?;
    fs.set(
        "removexattr",
        lua.create_function(|lua, (p, name): (LuaString, LuaString)| {
            let path = path_of(&p);
            rustix::fs::removexattr(&path, &*name.as_bytes())
                .map_err(|e| io_err(lua, "removexattr", &path, &e.into()))
        })?,
    )?;
    Ok(())
}
