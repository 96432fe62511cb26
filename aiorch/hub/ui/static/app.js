// aiorch dashboard: no inline scripts (the page's CSP forbids them); behaviour hangs off
// data- attributes here.
