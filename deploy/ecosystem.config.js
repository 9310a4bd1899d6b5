// healer under PM2:  pm2 start deploy/ecosystem.config.js && pm2 save
//
// healer is a command on PATH (/usr/local/bin/healer, see scripts/install), not a Node script:
// `interpreter: "none"` makes PM2 exec it directly. Secrets stay out of this file: they are
// read from /etc/healer/healer.env (KEY=value lines, mode 0600) when PM2 loads it. Note that
// `pm2 save` writes the resulting environment into ~/.pm2/dump.pm2: keep that file private.
// Edit the paths (/srv/app) to your app's.

const fs = require("fs");

function readEnvFile(path) {
  const env = {};
  let text = "";
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (e) {
    return env; // no secrets file: healer says which variables it misses
  }
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/);
    if (m && !line.trimStart().startsWith("#")) {
      env[m[1]] = m[2].replace(/^(['"])(.*)\1$/, "$2");
    }
  }
  return env;
}

module.exports = {
  apps: [
    {
      name: "healer",
      script: "healer",
      interpreter: "none",
      args: ["--config", "/srv/app/healer.toml", "run"],
      cwd: "/srv/app",
      exec_mode: "fork",
      instances: 1, // one `healer run` per state dir; a second one exits 2
      autorestart: true,
      restart_delay: 10000, // like systemd's RestartSec=10
      min_uptime: "30s",
      max_restarts: 50,
      // exit 2 = a config error or another healer on this state dir: restarting fixes neither
      stop_exit_codes: [0, 2],
      // PM2 stops with SIGINT, which healer handles like SIGTERM; it then has 15 s to record
      // the cycle in progress and say "stopped watching" before SIGKILL
      kill_timeout: 15000,
      env: {
        PYTHONUNBUFFERED: "1",
        PYTHONFAULTHANDLER: "1",
        ...readEnvFile("/etc/healer/healer.env"),
      },
      time: false, // healer's JSON log lines carry their own timestamp
      merge_logs: true,
    },
  ],
};
