// Every way opening an envelope or checking a file can fail, one class each, with the
// names and ancestry of docs/protocol.md section 12 (and of src/cmaas/envelope/errors.py),
// so a refusal names the same class in the browser as in the reference device.
// Device-side failures that are no envelope's fault derive from DeviceError instead.

/** Root of every envelope error (protocol section 12). */
export class EnvelopeError extends Error {
  /** @param {string} message what failed, and where */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** Not the v1 format: bad JSON, a missing, unknown or mistyped field, bad base64url,
 * a wrong size, bad padding or content, a bundle for another account. */
export class MalformedEncoding extends EnvelopeError {}
/** A 65-byte key is not an uncompressed point on P-256. */
export class InvalidPoint extends MalformedEncoding {}
/** A size or count limit was exceeded; refused before parsing further. */
export class OversizeInput extends MalformedEncoding {}
/** (Parent) integrity failed. */
export class TamperedEnvelope extends EnvelopeError {}
/** The app's signature (or a prekey signature) does not verify, or is not strict DER. */
export class BadSignature extends TamperedEnvelope {}
/** The signed header disagrees with the stanza (`from`, `id`). */
export class TamperedHeader extends TamperedEnvelope {}
/** This device's key entry does not open with the prekey it names. */
export class TamperedKeyEntry extends TamperedEnvelope {}
/** The payload does not decrypt under the content key and header. */
export class TamperedPayload extends TamperedEnvelope {}
/** A file blob record does not authenticate, the blob was cut or extended, or the
 * plaintext's size or SHA-256 differs from the envelope's (protocol 10.1.1). */
export class TamperedBlob extends TamperedPayload {}
/** (Parent) the app key is not the trusted one. */
export class AppKeyError extends EnvelopeError {}
/** No key is pinned for the app JID and the device requires one. */
export class UnpinnedAppKey extends AppKeyError {}
/** The app JID signs with a key other than the pinned one: tell the user loudly. */
export class AppKeyChanged extends AppKeyError {}
/** The app JID is not on the gateway's component domain. */
export class ForeignApp extends EnvelopeError {}
/** Addressed to another account. */
export class WrongRecipient extends EnvelopeError {}
/** No key entry for this device. */
export class WrongDevice extends WrongRecipient {}
/** The named prekey is not held: never issued, or a one-time prekey already used. */
export class UnknownKeyId extends EnvelopeError {}
/** `expires_ms` has passed. */
export class Expired extends EnvelopeError {}

/** Root of the device's own errors (its stored state, its use of the API). */
export class DeviceError extends Error {
  /** @param {string} message what failed, and what to do */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
/** The device's stored state cannot be read or written, is damaged, or a request on it
 * makes no sense (a fingerprint that is not the offered key's, a second device in one store). */
export class DeviceStateError extends DeviceError {}
/** A message's file could not be downloaded (for the page's fetch code to throw). */
export class FileUnavailable extends DeviceError {}

/** The class names of protocol section 12 (and TamperedBlob), by name. */
export const ENVELOPE_ERRORS = Object.freeze({
  EnvelopeError, MalformedEncoding, InvalidPoint, OversizeInput, TamperedEnvelope,
  BadSignature, TamperedHeader, TamperedKeyEntry, TamperedPayload, TamperedBlob,
  AppKeyError, UnpinnedAppKey, AppKeyChanged, ForeignApp, WrongRecipient, WrongDevice,
  UnknownKeyId, Expired,
});
