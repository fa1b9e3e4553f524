// A Llama-architecture decoder on the library's public API: QuantizedLinear (fp32 baseline, W8A16, W8A8, W4A16),
// FloatKvCache / Int8KvCache, and TransformerPrimitives (RMSNorm, rotary embedding, SwiGLU). Loads a Hugging Face
// safetensors checkpoint (float, or the compressed-tensors output of `ptq quantize`) or random weights of TinyLlama-1.1B's
// shape, prefills a prompt, decodes greedily and prints tokens/s and memory.
//   dotnet run -c Release --project samples/LlamaDecode -- --synthetic tinyllama-1.1b --layers 2
using Quantization.Samples;

return DecodeBenchmark.Run(args, Console.Out);
