import { randomInt } from "node:crypto";

const LEFT = [
  "brave",
  "calm",
  "eager",
  "fond",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "lucid",
  "merry",
  "nifty",
  "quirky",
  "sharp",
  "tender",
  "vivid",
  "witty",
  "zen",
  "bold",
  "clever",
  "dreamy",
];
const RIGHT = [
  "babbage",
  "curie",
  "darwin",
  "euler",
  "fermi",
  "gauss",
  "hopper",
  "kepler",
  "lovelace",
  "noether",
  "pascal",
  "ritchie",
  "shannon",
  "turing",
  "wozniak",
  "knuth",
  "lamport",
  "liskov",
  "dijkstra",
  "thompson",
];

/** A Docker-style generated container name such as "brave_turing". */
export function randomName(taken: (name: string) => boolean): string {
  for (;;) {
    const base = `${LEFT[randomInt(LEFT.length)]}_${RIGHT[randomInt(RIGHT.length)]}`;
    if (!taken(base)) return base;
    const numbered = `${base}${randomInt(1, 100)}`;
    if (!taken(numbered)) return numbered;
  }
}
