// Card payment for the pay page. The card goes from the browser to Stripe (or localstripe in
// development) as a PaymentMethod; our server only ever sees the PaymentMethod id.
(function () {
  "use strict";
  const form = document.getElementById("pay-form");
  if (!form || typeof Stripe === "undefined") { return; }
  const stripe = Stripe(form.dataset.key);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const errorBox = document.getElementById("pay-error");
  const button = document.getElementById("pay-button");
  const csrf = form.querySelector("input[name=csrf_token]").value;

  async function paymentMethod() {
    // The card is saved through a SetupIntent (Stripe.js sends it to Stripe directly); the
    // resulting PaymentMethod is what the server authorises the order total on.
    const setup = await post(form.dataset.setup, {});
    if (!setup.client_secret) { throw new Error(setup.error || "Payments are unavailable."); }
    const result = await stripe.confirmCardSetup(setup.client_secret,
                                                 { payment_method: { card: card } });
    if (!result || result.error) {
      throw new Error((result && result.error && result.error.message) ||
                      "The card could not be saved.");
    }
    return result.setupIntent.payment_method;
  }

  async function post(url, fields) {
    const body = new URLSearchParams(Object.assign({ csrf_token: csrf }, fields));
    const response = await fetch(url, { method: "POST", body: body, credentials: "same-origin" });
    return response.json();
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    errorBox.textContent = "";
    button.disabled = true;
    try {
      const id = await paymentMethod();
      let result = await post(form.action, { payment_method: id });
      if (result.status === "requires_action" && result.client_secret) {
        const confirmed = await stripe.confirmCardPayment(result.client_secret);
        if (confirmed && confirmed.error) { throw new Error(confirmed.error.message); }
        result = await post(form.dataset.confirm, {});
      }
      if (result.status === "authorised" || result.status === "captured") {
        window.location.assign(result.next);
        return;
      }
      throw new Error(result.error || "The payment did not go through.");
    } catch (err) {
      errorBox.textContent = err.message;
      button.disabled = false;
    }
  });
}());
