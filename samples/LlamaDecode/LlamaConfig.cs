using System.Globalization;
using System.Text.Json.Nodes;

namespace Quantization.Samples;

/// <summary>The shape of a Llama-architecture decoder: what Hugging Face's <c>config.json</c> says about it.</summary>
/// <param name="HiddenSize">The model width (<c>hidden_size</c>).</param>
/// <param name="IntermediateSize">The SwiGLU width (<c>intermediate_size</c>).</param>
/// <param name="Layers">The number of decoder layers (<c>num_hidden_layers</c>).</param>
/// <param name="Heads">The query heads (<c>num_attention_heads</c>).</param>
/// <param name="KvHeads">The key/value heads (<c>num_key_value_heads</c>), dividing <paramref name="Heads"/>.</param>
/// <param name="VocabSize">The vocabulary (<c>vocab_size</c>).</param>
/// <param name="RopeTheta">The rotary base (<c>rope_theta</c>, 10000 by default).</param>
/// <param name="RmsNormEps">RMSNorm's epsilon (<c>rms_norm_eps</c>).</param>
public sealed record LlamaConfig(int HiddenSize, int IntermediateSize, int Layers, int Heads, int KvHeads, int VocabSize, float RopeTheta = 10000f, float RmsNormEps = 1e-5f)
{
    /// <summary>Gets TinyLlama-1.1B's shape: 22 layers, hidden 2048, FFN 5632, 32 heads sharing 4 KV heads, vocabulary 32000.</summary>
    public static LlamaConfig TinyLlama { get; } = new(2048, 5632, 22, 32, 4, 32000);

    /// <summary>Gets a toy shape for tests: 2 layers, hidden 64, FFN 176, 8 heads sharing 2 KV heads (head dim 8), vocabulary 96.</summary>
    public static LlamaConfig Toy { get; } = new(64, 176, 2, 8, 2, 96);

    /// <summary>Gets the head dimension.</summary>
    public int HeadDim => HiddenSize / Heads;

    /// <summary>Gets the width of a token's keys (or values): KV heads x head dim.</summary>
    public int KvWidth => KvHeads * HeadDim;

    /// <summary>Reads a Hugging Face Llama <c>config.json</c>.</summary>
    /// <param name="path">The file.</param>
    /// <returns>The shape.</returns>
    /// <exception cref="InvalidDataException">A key is missing, or the shape is inconsistent.</exception>
    public static LlamaConfig Read(string path)
    {
        JsonObject json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"'{path}' is not a JSON object.");
        int Int(string key) => (int?)json[key] ?? throw new InvalidDataException($"'{path}' has no '{key}'.");
        int heads = Int("num_attention_heads");
        LlamaConfig config = new(
            Int("hidden_size"),
            Int("intermediate_size"),
            Int("num_hidden_layers"),
            heads,
            (int?)json["num_key_value_heads"] ?? heads,
            Int("vocab_size"),
            (float?)json["rope_theta"] ?? 10000f,
            (float?)json["rms_norm_eps"] ?? 1e-6f);
        if (json["rope_scaling"] is JsonObject scaling && (string?)scaling["rope_type"] is string type && type != "default")
        {
            throw new NotSupportedException($"'{path}': rope_scaling '{type}' is not implemented by this sample; only the default rotary embedding is.");
        }

        if (json["head_dim"] is JsonNode headDim && (int)headDim != config.HeadDim)
        {
            throw new NotSupportedException(string.Create(CultureInfo.InvariantCulture, $"'{path}': head_dim {(int)headDim} differs from hidden_size / num_attention_heads; not implemented by this sample."));
        }

        config.Validate();
        return config;
    }

    /// <summary>Checks that the shape is one the decoder runs.</summary>
    /// <exception cref="InvalidDataException">The shape is inconsistent.</exception>
    public void Validate()
    {
        if (HiddenSize <= 0 || IntermediateSize <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || VocabSize <= 0
            || HiddenSize % Heads != 0 || Heads % KvHeads != 0 || HeadDim % 2 != 0)
        {
            throw new InvalidDataException($"Not a Llama shape the decoder runs: {this}.");
        }
    }
}
