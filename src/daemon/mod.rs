//! The daemon shell: config, admin socket, cron, signals, CLI entry points.
