"""Card rendering: QR encoding, options, layout, PDF, SVG and PNG."""
