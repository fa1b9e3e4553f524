using System.Diagnostics;

using Quantization;

namespace Quantization.Samples;

/// <summary>
/// A Llama-architecture decoder on the library's kernels: RMSNorm, rotary embedding (rotate-half, as Hugging Face
/// checkpoints expect), grouped-query attention on a KV cache, a SwiGLU feed-forward layer, and the linears.
/// </summary>
public sealed class LlamaModel
{
    private readonly TokenEmbedding _embedding;
    private readonly LlamaLayer[] _layers;
    private readonly float[] _finalNorm;
    private readonly LlamaLinear _lmHead;
    private readonly float[] _inverseFrequencies;
    private int _threads = 1;

    /// <summary>Initializes a new instance of the <see cref="LlamaModel"/> class.</summary>
    /// <param name="config">The shape.</param>
    /// <param name="embedding">The token embedding.</param>
    /// <param name="layers">The decoder layers.</param>
    /// <param name="finalNorm">The final RMSNorm's weight.</param>
    /// <param name="lmHead">The output projection to the vocabulary.</param>
    public LlamaModel(LlamaConfig config, TokenEmbedding embedding, LlamaLayer[] layers, float[] finalNorm, LlamaLinear lmHead)
    {
        Config = config;
        _embedding = embedding;
        _layers = layers;
        _finalNorm = finalNorm;
        _lmHead = lmHead;
        _inverseFrequencies = new float[config.HeadDim / 2];
        TransformerPrimitives.RotaryInverseFrequencies(config.HeadDim, config.RopeTheta, _inverseFrequencies);
    }

    /// <summary>Gets the shape.</summary>
    public LlamaConfig Config { get; }

    /// <summary>Gets the bytes of all weights as held (embedding, linears, norms).</summary>
    public long WeightBytes => _embedding.Bytes + _lmHead.WeightBytes + (_finalNorm.Length * sizeof(float)) + _layers.Sum(l => l.WeightBytes);

    /// <summary>Gets or sets where the forward pass adds up its time per part, or <see langword="null"/> not to time it.</summary>
    public DecodeProfile? Profile { get; set; }

    /// <summary>Gets or sets the threads each linear uses.</summary>
    public int Threads
    {
        get => _threads;
        set
        {
            _threads = value;
            _lmHead.Threads = value;
            foreach (LlamaLayer layer in _layers)
            {
                layer.SetThreads(value);
            }
        }
    }

    /// <summary>
    /// Runs a block of tokens that follow the cache's contents (a prompt, or one token when decoding): the linears see the
    /// whole block at once (GEMM), the block joins the cache and attends causally in one call per layer.
    /// </summary>
    /// <param name="tokens">The token ids.</param>
    /// <param name="cache">The KV cache; its count is the block's first position.</param>
    /// <param name="logits">Receives the last token's logits, vocabulary size values.</param>
    public void Forward(ReadOnlySpan<int> tokens, DecodeCache cache, Span<float> logits)
    {
        long time = Stopwatch.GetTimestamp();
        LlamaConfig c = Config;
        int count = tokens.Length, hidden = c.HiddenSize, position = cache.Count, half = c.HeadDim / 2;
        float[] x = new float[count * hidden];
        for (int t = 0; t < count; t++)
        {
            _embedding.Lookup(tokens[t], x.AsSpan(t * hidden, hidden));
        }

        float[] cos = new float[count * half], sin = new float[count * half];
        for (int t = 0; t < count; t++)
        {
            TransformerPrimitives.RotaryAngles(position + t, _inverseFrequencies, cos.AsSpan(t * half, half), sin.AsSpan(t * half, half));
        }

        Workspace work = new(c, count);
        Profile?.Add(7, time);
        for (int l = 0; l < _layers.Length; l++)
        {
            _layers[l].Forward(l, x, count, cos, sin, cache, work, Profile);
        }

        time = Stopwatch.GetTimestamp();
        Span<float> last = x.AsSpan((count - 1) * hidden, hidden);
        TransformerPrimitives.RmsNorm(last, _finalNorm, c.RmsNormEps, last);
        time = Profile?.Add(0, time) ?? time;
        _lmHead.Forward(last, logits, 1);
        Profile?.Add(6, time);
    }

    /// <summary>The activations of one block, reused by every layer.</summary>
    internal sealed class Workspace(LlamaConfig c, int tokens)
    {
        public float[] Normed { get; } = new float[tokens * c.HiddenSize];

        public float[] Queries { get; } = new float[tokens * c.HiddenSize];

        public float[] Keys { get; } = new float[tokens * c.KvWidth];

        public float[] Values { get; } = new float[tokens * c.KvWidth];

        public float[] Attention { get; } = new float[tokens * c.HiddenSize];

        public float[] Projected { get; } = new float[tokens * c.HiddenSize];

        public float[] Gate { get; } = new float[tokens * c.IntermediateSize];

        public float[] Up { get; } = new float[tokens * c.IntermediateSize];
    }
}
