// healer under PM2:  pm2 start deploy/ecosystem.config.js && pm2 save
//
// healer is a command on PATH (/usr/local/bin/healer, see scripts/install), not a Node script:
// `interpreter: "none"` makes PM2 exec it directly. Secrets stay out of this file: they are
// read from /etc/healer/healer.env (KEY=value lines, mode 0600) when PM2 loads it. Note that
// `pm2 save` writes the resulting environment into ~/.pm2/dump.pm2: keep that file private.
// Edit the paths (/srv/app) to your app's.
//
// Logs: healer writes one JSON line per event on stderr, routine ones included. PM2 would file
// all of them under <app>-error.log; out_file and error_file name one file instead, so
// `pm2 logs healer` and the file show every line once, in order (the level is in each line).

const fs = require("fs");
const os = require("os");
const path = require("path");

const PM2_HOME = process.env.PM2_HOME || path.join(os.homedir(), ".pm2");
const LOG = path.join(PM2_HOME, "logs", "healer.log");

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
      // Restarted at once after kill -9 or an OOM kill: the kernel frees healer's lock with the
      // process. No restart_delay (nor exp_backoff_restart_delay): with one, `pm2 ls` shows a
      // healer that exited 2 as "waiting restart" for good although PM2 never restarts it. A
      // crash loop is bounded instead: dying within min_uptime of a start counts as unstable,
      // and after max_restarts of those PM2 gives up and shows "errored".
      min_uptime: "30s",
      max_restarts: 10,
      // exit 2 = a config error or another healer on this state dir: restarting fixes neither.
      // Not 0: PM2 reports a death by signal as exit code 0 (`code || 0` in its God.js), so
      // listing 0 would leave healer down for good after kill -9 or an OOM kill. `pm2 stop`
      // and `pm2 delete` are never restarted whatever the code: PM2 asked for that stop.
      stop_exit_codes: [2],
      // PM2 stops with SIGINT, which healer handles like SIGTERM; it then has 15 s to record
      // the cycle in progress and say "stopped watching" before SIGKILL. A repair or rollback in
      // flight gets 10 s of those to finish (a restart waiting for the app to stop, a rollback's
      // `after` command); past them healer stops it itself and the next start takes it up.
      kill_timeout: 15000,
      // The stop signal goes to healer alone: by default PM2 signals its whole process tree,
      // which would stop a rollback's `after` command half way while healer waits for it.
      treekill: false,
      env: {
        PYTHONUNBUFFERED: "1",
        PYTHONFAULTHANDLER: "1",
        ...readEnvFile("/etc/healer/healer.env"),
      },
      time: false, // healer's JSON log lines carry their own timestamp
      merge_logs: true, // no "-0" instance suffix in the log file's name
      out_file: LOG,
      error_file: LOG,
    },
  ],
};
