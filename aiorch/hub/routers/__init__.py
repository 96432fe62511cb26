"""Thin HTTP routers: parse, authorise, call one service function, answer."""
