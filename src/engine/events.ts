import { EventEmitter } from "node:events";

/** An event in Docker's /events shape. */
export interface EngineEvent {
  Type: "network" | "container";
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  scope: "local";
  time: number;
  timeNano: number;
}

/** Fans engine events out to /events listeners. */
export class EventLog extends EventEmitter<{ event: [EngineEvent] }> {
  publish(type: EngineEvent["Type"], action: string, id: string, attributes: Record<string, string>): void {
    const nanos = process.hrtime.bigint();
    const now = Date.now();
    this.emit("event", {
      Type: type,
      Action: action,
      Actor: { ID: id, Attributes: attributes },
      scope: "local",
      time: Math.floor(now / 1000),
      timeNano: now * 1_000_000 + Number(nanos % 1_000_000n),
    });
  }
}
