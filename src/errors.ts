/**
 * Typed errors shared by every layer. Each carries the HTTP status the API answers with, so the
 * mapping to Docker's status codes lives here and in the API's single error handler, nowhere else.
 */
export class CtnetError extends Error {
  readonly status: number = 500;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** 400: the request is malformed or names an unknown option, driver or address. */
export class InvalidParameterError extends CtnetError {
  override readonly status = 400;
}

/** 403: the request is valid but not allowed in the current state (Docker uses it for network rm in use, predefined networks). */
export class ForbiddenError extends CtnetError {
  override readonly status = 403;
}

/** 404: a named object does not exist. */
export class NotFoundError extends CtnetError {
  override readonly status = 404;
}

/** 409: a name, address or port is already taken, or the object is in a conflicting state. */
export class ConflictError extends CtnetError {
  override readonly status = 409;
}

/** 501: the running kernel or machine lacks something the request needs. */
export class NotSupportedError extends CtnetError {
  override readonly status = 501;
}

/** 503: the host is not in the state the request needs (Docker's answer to swarm calls outside a swarm). */
export class UnavailableError extends CtnetError {
  override readonly status = 503;
}

/** 500 with a message that says what failed in the system below (kernel, store, runtime). */
export class SystemError extends CtnetError {
  override readonly status = 500;
}
