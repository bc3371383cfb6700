import { pino } from "pino";

/** The daemon's structured log (JSON lines on stderr); the level is set from --log-level. */
export const log = pino({ level: process.env.CTNET_LOG_LEVEL ?? "info" }, pino.destination(2));
