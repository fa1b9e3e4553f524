using Quantization.Samples;
using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Samples;

/// <summary>
/// The LlamaDecode sample: its table, its decoder core against a scalar Llama forward written from the definition, the
/// quantized paths against fp32, and checkpoints read back from disk (float, and quantized by <see cref="CheckpointQuantizer"/>).
/// </summary>
public sealed class LlamaDecodeTests : IDisposable
{
    private static readonly int[] Prompt = [5, 17, 3, 88, 41, 60, 2];

    private readonly string _directory = Directory.CreateTempSubdirectory("llama-decode-tests").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Sample_ToyModel_PrintsTheTable()
    {
        StringWriter output = new();
        Assert.Equal(0, DecodeBenchmark.Run(["--synthetic", "toy", "--prompt", "8", "--generate", "4"], output));
        string[] lines = output.ToString().Split('\n', StringSplitOptions.TrimEntries);
        Assert.Contains(lines, l => l.StartsWith("linears      KV    threads  prefill tok/s  decode tok/s  resident MB  weights MB  KV cache MB", StringComparison.Ordinal));
        foreach (string linears in new[] { "fp32", "w8a16", "w8a8", "w4a16", "w4a16/w4a8" })
        {
            foreach (string kv in new[] { "fp32", "int8" })
            {
                Assert.Equal(2, lines.Count(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries) is [string a, string b, _, _, _, _, _, _] && a == linears && b == kv));
            }
        }

        Assert.Contains(lines, l => l.StartsWith("W8A8 + int8 KV vs fp32 + fp32 KV, one thread: decode", StringComparison.Ordinal));
    }

    [Fact]
    public void Sample_BadCommandLine_PrintsUsage()
    {
        StringWriter output = new();
        Assert.Equal(2, DecodeBenchmark.Run(["--layers"], output));
        Assert.Contains("Usage", output.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Decoder_Fp32LinearsAndCache_MatchScalarLlamaForward()
    {
        using SyntheticWeights weights = new(LlamaConfig.Toy with { RopeTheta = 500f }, seed: 3);
        LlamaModel model = LlamaWeights.Build(weights, mode: null);
        foreach ((int[] sequence, float[] logits) in Decode(model, cacheInt8: false, steps: 4))
        {
            double[] expected = ReferenceForward(weights, sequence);
            double scale = expected.Max(Math.Abs);
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.True(Math.Abs(expected[i] - logits[i]) <= 1e-4 * scale, $"{sequence.Length} tokens, logit {i}: {logits[i]} vs {expected[i]}");
            }
        }
    }

    [Theory]
    [InlineData(QuantizedLinearMode.W8A8, true, 0.999)]
    [InlineData(QuantizedLinearMode.W8A16, false, 0.9995)]
    [InlineData(QuantizedLinearMode.W4A16, true, 0.98)] // RTN int4 in groups of 32, no GPTQ
    public void Decoder_QuantizedLinearsAndInt8Cache_StayCloseToFp32(QuantizedLinearMode mode, bool cacheInt8, double minCosine)
    {
        using SyntheticWeights weights = new(LlamaConfig.Toy, seed: 4);
        var fp32 = Decode(LlamaWeights.Build(weights, mode: null), cacheInt8: false, steps: 6);
        var quantized = Decode(LlamaWeights.Build(weights, mode), cacheInt8, steps: 6, forced: fp32[^1].Sequence); // fp32's tokens
        for (int step = 0; step < fp32.Count; step++)
        {
            double cosine = LinearReference.Cosine([.. fp32[step].Logits.Select(v => (double)v)], quantized[step].Logits);
            Assert.True(cosine >= minCosine, $"{mode}, step {step}: cosine {cosine}");
        }
    }

    [Fact]
    public void Decoder_PrefillModeOfTheSameWidth_OnlyChangesThePromptBlock()
    {
        // W4A16 decoding after a W4A8 prefill: the same weights, int8 activations for the prompt block only.
        using SyntheticWeights weights = new(LlamaConfig.Toy, seed: 7);
        var exact = Decode(LlamaWeights.Build(weights, QuantizedLinearMode.W4A16), cacheInt8: false, steps: 3);
        var mixed = Decode(LlamaWeights.Build(weights, QuantizedLinearMode.W4A16, QuantizedLinearMode.W4A8), cacheInt8: false, steps: 3, forced: exact[^1].Sequence);
        Assert.NotEqual(exact[0].Logits, mixed[0].Logits);
        Assert.All(mixed, (step, i) => Assert.True(LinearReference.Cosine([.. exact[i].Logits.Select(v => (double)v)], step.Logits) > 0.99));
        Assert.Throws<ArgumentException>(() => LlamaWeights.Build(weights, QuantizedLinearMode.W4A16, QuantizedLinearMode.W8A8));
        Assert.Throws<ArgumentException>(() => LlamaWeights.Build(weights, null, QuantizedLinearMode.W8A8));
    }

    [Fact]
    public void Decoder_ThreadsAndCacheReuse_GiveTheSameBits()
    {
        using SyntheticWeights weights = new(LlamaConfig.Toy, seed: 5);
        LlamaModel model = LlamaWeights.Build(weights, QuantizedLinearMode.W8A8);
        var one = Decode(model, cacheInt8: true, steps: 3);
        model.Threads = 2;
        var two = Decode(model, cacheInt8: true, steps: 3);
        Assert.Equal(one.Select(s => s.Logits), two.Select(s => s.Logits));
    }

    [Theory]
    [InlineData(null, false)]
    [InlineData(null, true)]
    [InlineData(QuantizedLinearMode.W8A8, true)]
    [InlineData(QuantizedLinearMode.W8A16, true)]
    [InlineData(QuantizedLinearMode.W4A16, false)]
    public void Decoder_PromptAsOneBlock_HasTheBitsOfTokenByTokenPrefill(QuantizedLinearMode? mode, bool cacheInt8)
    {
        // The block's causal attention has the bits of attending after each append (fp32 and dynamic int8 caches), and
        // each row of the linears' GEMM the bits of a GEMV: the prompt's logits and the cache's contents cannot tell.
        using SyntheticWeights weights = new(LlamaConfig.Toy, seed: 8);
        LlamaModel model = LlamaWeights.Build(weights, mode);
        var block = Decode(model, cacheInt8, steps: 2);
        var tokenByToken = Decode(model, cacheInt8, steps: 2, promptByToken: true);
        Assert.Equal(block.Select(s => s.Sequence), tokenByToken.Select(s => s.Sequence));
        Assert.Equal(block.Select(s => s.Logits), tokenByToken.Select(s => s.Logits));
        model.Threads = 2;
        Assert.Equal(block.Select(s => s.Logits), Decode(model, cacheInt8, steps: 2).Select(s => s.Logits));
    }

    [Theory]
    [InlineData(null)]
    [InlineData(QuantizedLinearMode.W8A8)]
    [InlineData(QuantizedLinearMode.W4A16)]
    public void Checkpoint_FloatOrQuantizedByPtq_DecodesAsTheInMemoryModel(QuantizedLinearMode? mode)
    {
        using SyntheticWeights weights = new(LlamaConfig.Toy, seed: 6);
        string floats = Path.Combine(_directory, "float");
        WriteCheckpoint(weights, floats);
        string path = floats;
        if (mode is not null)
        {
            // ptq quantize's library call; the weights come back as QuantizedTensors, not floats.
            path = Path.Combine(_directory, mode.ToString()!);
            QuantizationScheme scheme = mode == QuantizedLinearMode.W4A16 ? QuantizationScheme.Int4PerGroup(32) : QuantizationScheme.Int8PerChannel();
            CheckpointQuantizer.Quantize(floats, path, new CheckpointQuantizationOptions { Scheme = scheme });
        }

        using CheckpointWeights checkpoint = new(path);
        Assert.Equal(mode is not null, checkpoint.IsQuantized);
        Assert.Equal(LlamaConfig.Toy, checkpoint.Config);
        var fromDisk = Decode(LlamaWeights.Build(checkpoint, mode), cacheInt8: false, steps: 3);
        var inMemory = Decode(LlamaWeights.Build(weights, mode), cacheInt8: false, steps: 3);
        Assert.Equal(inMemory.Select(s => s.Logits), fromDisk.Select(s => s.Logits));
        if (mode is not null)
        {
            Assert.Throws<NotSupportedException>(() => LlamaWeights.Build(checkpoint, mode: null));
        }
    }

    /// <summary>
    /// Prefills <see cref="Prompt"/> (as one block, or one token at a time), then decodes greedily (or feeds the tokens of
    /// <paramref name="forced"/>): the sequence and the logits after the prompt and each step.
    /// </summary>
    private static List<(int[] Sequence, float[] Logits)> Decode(LlamaModel model, bool cacheInt8, int steps, int[]? forced = null, bool promptByToken = false)
    {
        using DecodeCache cache = new(model.Config, Prompt.Length + steps, cacheInt8);
        List<int> sequence = [.. Prompt];
        List<(int[], float[])> result = [];
        float[] logits = new float[model.Config.VocabSize];
        for (int t = 0; t < Prompt.Length; t += promptByToken ? 1 : Prompt.Length)
        {
            model.Forward(Prompt.AsSpan(t, promptByToken ? 1 : Prompt.Length), cache, logits);
        }

        result.Add(([.. sequence], (float[])logits.Clone()));
        for (int step = 0; step < steps; step++)
        {
            int next = forced?[sequence.Count] ?? Array.IndexOf(logits, logits.Max());
            sequence.Add(next);
            model.Forward([next], cache, logits);
            result.Add(([.. sequence], (float[])logits.Clone()));
        }

        Assert.Equal(sequence.Count, cache.Count);
        return result;
    }

    /// <summary>Writes the weights as a float32 Hugging Face checkpoint: <c>model.safetensors</c> and <c>config.json</c>.</summary>
    private static void WriteCheckpoint(LlamaWeights weights, string directory)
    {
        LlamaConfig c = weights.Config;
        List<(string Name, int Rows, int Columns)> tensors = [("model.embed_tokens.weight", c.VocabSize, c.HiddenSize), ("model.norm.weight", 1, c.HiddenSize), ("lm_head.weight", c.VocabSize, c.HiddenSize)];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            tensors.AddRange([
                (p + "input_layernorm.weight", 1, c.HiddenSize), (p + "post_attention_layernorm.weight", 1, c.HiddenSize),
                (p + "self_attn.q_proj.weight", c.HiddenSize, c.HiddenSize), (p + "self_attn.k_proj.weight", c.KvWidth, c.HiddenSize),
                (p + "self_attn.v_proj.weight", c.KvWidth, c.HiddenSize), (p + "self_attn.o_proj.weight", c.HiddenSize, c.HiddenSize),
                (p + "mlp.gate_proj.weight", c.IntermediateSize, c.HiddenSize), (p + "mlp.up_proj.weight", c.IntermediateSize, c.HiddenSize),
                (p + "mlp.down_proj.weight", c.HiddenSize, c.IntermediateSize)]);
        }

        Directory.CreateDirectory(directory);
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(directory, SafeTensorsCheckpoint.SingleFileName), tensors.Select(t => new SafeTensorDescriptor(t.Name, SafeTensorDataType.Float32, t.Rows == 1 ? [t.Columns] : [t.Rows, t.Columns]))))
        {
            foreach ((string name, int rows, int columns) in tensors)
            {
                writer.Write<float>(weights.ReadFloat(name, rows, columns));
            }

            writer.Commit();
        }

        File.WriteAllText(Path.Combine(directory, "config.json"), FormattableString.Invariant($$"""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": {{c.HiddenSize}}, "intermediate_size": {{c.IntermediateSize}},
             "num_hidden_layers": {{c.Layers}}, "num_attention_heads": {{c.Heads}}, "num_key_value_heads": {{c.KvHeads}},
             "vocab_size": {{c.VocabSize}}, "rope_theta": {{c.RopeTheta}}, "rms_norm_eps": {{c.RmsNormEps}}, "torch_dtype": "float32"}
            """));
    }

    /// <summary>
    /// The Llama forward from its definition, in double, over the whole sequence (no cache): the last token's logits.
    /// </summary>
    private static double[] ReferenceForward(LlamaWeights weights, int[] tokens)
    {
        LlamaConfig c = weights.Config;
        int n = tokens.Length, h = c.HiddenSize, d = c.HeadDim, kvw = c.KvWidth, ffn = c.IntermediateSize;
        double[][] x = [.. tokens.Select(t => weights.ReadFloat("model.embed_tokens.weight", c.VocabSize, h).AsSpan(t * h, h).ToArray().Select(v => (double)v).ToArray())];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            double[] Linear(string name, double[] input, int outFeatures)
            {
                float[] w = weights.ReadFloat(p + name, outFeatures, input.Length);
                return [.. Enumerable.Range(0, outFeatures).Select(o => Enumerable.Range(0, input.Length).Sum(i => w[(o * input.Length) + i] * input[i]))];
            }

            double[][] normed = [.. x.Select(v => Norm(v, weights.ReadFloat(p + "input_layernorm.weight", 1, h), c.RmsNormEps))];
            double[][] q = [.. normed.Select((v, t) => Rope(Linear("self_attn.q_proj.weight", v, h), t, d, c.RopeTheta))];
            double[][] k = [.. normed.Select((v, t) => Rope(Linear("self_attn.k_proj.weight", v, kvw), t, d, c.RopeTheta))];
            double[][] v = [.. normed.Select(v => Linear("self_attn.v_proj.weight", v, kvw))];
            for (int t = 0; t < n; t++)
            {
                double[] attention = new double[h];
                for (int head = 0; head < c.Heads; head++)
                {
                    int kvHead = head / (c.Heads / c.KvHeads);
                    double[] scores = [.. Enumerable.Range(0, t + 1).Select(s => Enumerable.Range(0, d).Sum(i => q[t][(head * d) + i] * k[s][(kvHead * d) + i]) / Math.Sqrt(d))];
                    double max = scores.Max();
                    double[] weightsOf = [.. scores.Select(s => Math.Exp(s - max))];
                    double total = weightsOf.Sum();
                    for (int s = 0; s <= t; s++)
                    {
                        for (int i = 0; i < d; i++)
                        {
                            attention[(head * d) + i] += weightsOf[s] / total * v[s][(kvHead * d) + i];
                        }
                    }
                }

                double[] projected = Linear("self_attn.o_proj.weight", attention, h);
                x[t] = [.. x[t].Select((value, i) => value + projected[i])];
            }

            for (int t = 0; t < n; t++)
            {
                double[] m = Norm(x[t], weights.ReadFloat(p + "post_attention_layernorm.weight", 1, h), c.RmsNormEps);
                double[] gate = Linear("mlp.gate_proj.weight", m, ffn), up = Linear("mlp.up_proj.weight", m, ffn);
                double[] down = Linear("mlp.down_proj.weight", [.. gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i])], h);
                x[t] = [.. x[t].Select((value, i) => value + down[i])];
            }
        }

        double[] last = Norm(x[^1], weights.ReadFloat("model.norm.weight", 1, h), c.RmsNormEps);
        float[] lmHead = weights.ReadFloat("lm_head.weight", c.VocabSize, h);
        return [.. Enumerable.Range(0, c.VocabSize).Select(o => Enumerable.Range(0, h).Sum(i => lmHead[(o * h) + i] * last[i]))];
    }

    private static double[] Norm(double[] x, float[] weight, double epsilon)
    {
        double r = 1 / Math.Sqrt((x.Sum(v => v * v) / x.Length) + epsilon);
        return [.. x.Select((v, i) => weight[i] * v * r)];
    }

    /// <summary>Rotate-half rotary embedding of every head at a position, in double.</summary>
    private static double[] Rope(double[] x, int position, int dim, double theta)
    {
        double[] y = new double[x.Length];
        int half = dim / 2;
        for (int head = 0; head < x.Length; head += dim)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = position / Math.Pow(theta, 2.0 * i / dim);
                double a = x[head + i], b = x[head + i + half];
                y[head + i] = (a * Math.Cos(angle)) - (b * Math.Sin(angle));
                y[head + i + half] = (b * Math.Cos(angle)) + (a * Math.Sin(angle));
            }
        }

        return y;
    }
}
