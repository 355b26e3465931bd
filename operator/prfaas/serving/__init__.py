"""What the router and the simulated engine share at the HTTP edge: OpenAI request/response
shapes and the optional Hugging Face tokenizer."""
