// The console's clock warning (ISO/IEC 27001 A.8.17): when the server's clock is not known to
// be synchronised, the audit log's times cannot be vouched for; say so above every panel.

import { getJSON } from "./api.js";

const RELOAD_MS = 60000;

export async function watchClock({ key, timers }) {
  const banner = document.getElementById("clock-warning");
  async function check() {
    try {
      const clock = await getJSON(key, "/admin/v1/clock");
      banner.hidden = clock.synchronized === true;
      banner.textContent = clock.synchronized === true ? "" : "The server's clock is not known " +
        `to be synchronised (${clock.source}: ${clock.detail}): the audit log's times cannot be ` +
        "vouched for. Run a time daemon (chrony, ntpd) on the server.";
    } catch {
      banner.hidden = true; // the check is advisory; the panels report their own errors
    }
  }
  await check();
  timers.push(setInterval(check, RELOAD_MS));
}
