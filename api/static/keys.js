// Makes a new organisation key pair in the admin's browser (DESIGN.md, "Data protection"): the
// private key is protected here under the new passphrase (Argon2id + XSalsa20-Poly1305, in
// core/sealing.py's "P1" layout) and only then uploaded; the passphrase never leaves the page.
// Every text is set with textContent, never as HTML.
import sodium from "./vendor/libsodium-wrappers.js";

function protect(privateKey, passphrase) {
  const ops = sodium.crypto_pwhash_OPSLIMIT_MODERATE;
  const mem = sodium.crypto_pwhash_MEMLIMIT_MODERATE;
  const salt = sodium.randombytes_buf(sodium.crypto_pwhash_SALTBYTES);
  const key = sodium.crypto_pwhash(
    sodium.crypto_secretbox_KEYBYTES, passphrase, salt, ops, mem,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
  const nonce = sodium.randombytes_buf(sodium.crypto_secretbox_NONCEBYTES);
  const box = sodium.crypto_secretbox_easy(privateKey, nonce, key);
  sodium.memzero(key);
  const head = new Uint8Array(14);
  const view = new DataView(head.buffer);
  head.set([0x50, 0x31]); // "P1": magic, u32 opslimit, u64 memlimit (big-endian), salt, box
  view.setUint32(2, ops);
  view.setBigUint64(6, BigInt(mem));
  const blob = new Uint8Array(head.length + salt.length + nonce.length + box.length);
  blob.set(head, 0);
  blob.set(salt, head.length);
  blob.set(nonce, head.length + salt.length);
  blob.set(box, head.length + salt.length + nonce.length);
  return blob;
}

function base64(bytes) {
  return sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
}

async function makePair(form) {
  const status = form.querySelector(".status");
  const first = form.querySelector("input.passphrase");
  const again = form.querySelector("input.again");
  const labels = form.dataset;
  const passphrase = first.value;
  const same = passphrase === again.value;
  if (passphrase.length < Number(labels.min)) {
    status.textContent = labels.short;
    return;
  }
  first.value = "";
  again.value = "";
  if (!same) {
    status.textContent = labels.mismatch;
    return;
  }
  status.textContent = labels.working;
  await sodium.ready;
  const pair = sodium.crypto_box_keypair();
  let body;
  try {
    body = JSON.stringify({
      public_key: base64(pair.publicKey),
      protected_private_key: base64(protect(pair.privateKey, passphrase)),
    });
  } finally {
    sodium.memzero(pair.privateKey);
  }
  const answer = await fetch("/api/v1/org/keys", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json",
      "x-csrf-token": labels.csrf,
    },
    body,
  });
  if (answer.ok) {
    window.location.assign("/keys?notice=key");
    return;
  }
  const problem = await answer.json().catch(() => ({}));
  status.textContent = typeof problem.detail === "string" ? problem.detail : labels.failed;
}

const form = document.querySelector("form.newkey");
if (form) {
  form.hidden = false; // shown only once this script runs (see keys.html)
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    makePair(form).catch((error) => {
      form.querySelector(".status").textContent = form.dataset.failed;
      console.error(error); // a bug, not a refusal: the tests watch for these
    });
  });
}
