// The new-key page opened from a "+" next to a key field: "Done" closes the popup and selects
// the new key in that field, as Django's own popup response would (after the key was shown).
"use strict";
{
    const done = document.getElementById("new-key-done");
    if (done) {
        done.addEventListener("click", () => {
            const data = JSON.parse(done.dataset.popupResponse);
            if (window.opener && window.opener.dismissAddRelatedObjectPopup) {
                window.opener.dismissAddRelatedObjectPopup(window, data.value, data.obj);
            } else {
                window.close();
            }
        });
    }
}
