import { reportError } from "./errors.js";
import { buildProgram } from "./program.js";

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  // exitCode rather than exit(): output still buffered for a pipe gets written before Node exits.
  process.exitCode = reportError(err);
}
