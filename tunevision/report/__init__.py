"""Figures and the HTML page every task's report is built from."""
