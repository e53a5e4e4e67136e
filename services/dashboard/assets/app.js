"use strict";
// The dashboard's single-page UI: routes on location.pathname with the history API.
