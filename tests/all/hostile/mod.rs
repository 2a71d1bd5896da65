//! The server under attack, one module per thing an attacker can try: hold connections
//! and bodies, starve policies with a slow one, tamper with the compile cache, forge or
//! flood the log, and race the shutdown. Real sockets on loopback; each test bounded in
//! time and count. They assert behaviour and memory bounds, never speed.

mod compile_cache;
mod connections;
mod fairness;
mod logs;
mod raw;
mod shutdown;
