using Quantization;

namespace Quantization.Samples;

/// <summary>Where a decoder's weights come from (Hugging Face names), and how a model is built from them.</summary>
public abstract class LlamaWeights : IDisposable
{
    /// <summary>Gets the model's shape.</summary>
    public abstract LlamaConfig Config { get; }

    /// <summary>Builds a decoder whose linears run in <paramref name="mode"/> (<see langword="null"/> for fp32).</summary>
    /// <param name="weights">The weights.</param>
    /// <param name="mode">The linears' mode: float weights are quantized to its width (int8 per channel, or int4 in groups of 32); weights stored quantized are used as stored.</param>
    /// <param name="prefillMode">The mode for blocks of tokens (prefill), of the same weight width; <paramref name="mode"/> when <see langword="null"/>.</param>
    /// <returns>The model.</returns>
    /// <exception cref="NotSupportedException">A weight is stored quantized at another width than the mode's, or the mode is fp32.</exception>
    /// <exception cref="ArgumentException">The prefill mode is for another weight width, or given for fp32.</exception>
    public static LlamaModel Build(LlamaWeights weights, QuantizedLinearMode? mode, QuantizedLinearMode? prefillMode = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (prefillMode is not null && (mode is null || IsFourBit(prefillMode) != IsFourBit(mode)))
        {
            throw new ArgumentException($"Prefill mode {prefillMode} does not run the weights of mode {mode?.ToString() ?? "fp32"}.", nameof(prefillMode));
        }

        LlamaConfig c = weights.Config;
        int hidden = c.HiddenSize, ffn = c.IntermediateSize, kv = c.KvWidth;
        LlamaLinear Linear(string name, int outFeatures, int inFeatures)
        {
            bool fourBit = IsFourBit(mode);
            if (weights.ReadQuantized(name) is QuantizedTensor stored)
            {
                if (mode is null || (stored.Scheme.Type.GetBitWidth() == 4) != fourBit)
                {
                    throw new NotSupportedException($"'{name}' is stored as {stored.Scheme.Type}; mode {mode?.ToString() ?? "fp32"} would need a float round trip.");
                }

                return LlamaLinear.Quantized(stored, mode.Value, prefillMode ?? mode.Value);
            }

            float[] weight = weights.ReadFloat(name, outFeatures, inFeatures);
            if (mode is null)
            {
                return LlamaLinear.Float(weight, outFeatures, inFeatures);
            }

            QuantizationScheme scheme = fourBit ? QuantizationScheme.Int4PerGroup(32) : QuantizationScheme.Int8PerChannel();
            return LlamaLinear.Quantized(QuantizedTensor.Quantize(weight, [outFeatures, inFeatures], scheme, name), mode.Value, prefillMode ?? mode.Value);
        }

        LlamaLayer[] layers = new LlamaLayer[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            layers[l] = new LlamaLayer(
                c,
                weights.ReadFloat(p + "input_layernorm.weight", 1, hidden),
                Linear(p + "self_attn.q_proj.weight", hidden, hidden),
                Linear(p + "self_attn.k_proj.weight", kv, hidden),
                Linear(p + "self_attn.v_proj.weight", kv, hidden),
                Linear(p + "self_attn.o_proj.weight", hidden, hidden),
                weights.ReadFloat(p + "post_attention_layernorm.weight", 1, hidden),
                Linear(p + "mlp.gate_proj.weight", ffn, hidden),
                Linear(p + "mlp.up_proj.weight", ffn, hidden),
                Linear(p + "mlp.down_proj.weight", hidden, ffn));
        }

        TokenEmbedding embedding = new(weights.ReadFloat("model.embed_tokens.weight", c.VocabSize, hidden), hidden, quantize: mode is not null);
        string head = weights.Has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight"; // tied embeddings
        return new LlamaModel(c, embedding, layers, weights.ReadFloat("model.norm.weight", 1, hidden), Linear(head, c.VocabSize, hidden));
    }

    private static bool IsFourBit(QuantizedLinearMode? mode) => mode is QuantizedLinearMode.W4A16 or QuantizedLinearMode.W4A8;

    /// <summary>Reads a float tensor (fp32, fp16 or bf16 stored), checking its size.</summary>
    /// <param name="name">The Hugging Face name.</param>
    /// <param name="rows">The rows expected (1 for a vector).</param>
    /// <param name="columns">The columns expected.</param>
    /// <returns>The values, row-major.</returns>
    public abstract float[] ReadFloat(string name, int rows, int columns);

    /// <summary>Reads a weight stored quantized (compressed-tensors), or returns <see langword="null"/> when it is stored as floats.</summary>
    /// <param name="name">The Hugging Face name.</param>
    /// <returns>The tensor, or <see langword="null"/>.</returns>
    public virtual QuantizedTensor? ReadQuantized(string name) => null;

    /// <summary>Tells whether the weights hold a tensor.</summary>
    /// <param name="name">The name.</param>
    /// <returns>Whether it is there.</returns>
    public abstract bool Has(string name);

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the files held.</summary>
    /// <param name="disposing">Whether called from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing)
    {
    }
}
