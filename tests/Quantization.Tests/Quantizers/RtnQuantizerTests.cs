namespace Quantization.Tests.Quantizers;

public class RtnQuantizerTests
{
    private static readonly NamedTensor[] Model =
    [
        Tensor("model.embed_tokens.weight", 32, 16),
        Tensor("model.layers.0.self_attn.q_proj.weight", 16, 16),
        Tensor("model.layers.0.self_attn.q_proj.bias", 16),
        Tensor("model.layers.0.input_layernorm.weight", 16),
        Tensor("model.layers.0.mlp.down_proj.weight", 16, 64),
        Tensor("lm_head.weight", 32, 16),
    ];

    [Fact]
    public void Quantize_FollowsExcludeRankAndOverrideRules_AndReportsEachTensor()
    {
        RtnOptions options = new();
        options.Exclude.Add(new NamePattern("*embed_tokens*"));
        options.Exclude.Add(new NamePattern("re:lm_head"));
        options.Overrides.Add(new(new NamePattern("*.mlp.*"), QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(32))));
        List<RtnProgress> progress = [];
        RtnResult result = new RtnQuantizer(options).Quantize(Model, new SynchronousProgress(progress));

        Assert.Equal(["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"], result.Tensors.Select(t => t.Name));
        Assert.Equal(GranularityKind.PerChannel, result.Tensors[0].Scheme.Granularity.Kind);
        Assert.Equal(QuantizationGranularity.PerGroup(32), result.Tensors[1].Scheme.Granularity);
        Assert.Equal(16 * 2, result.Tensors[1].Parameters.Count);
        Assert.Equal(
            ["excluded by '*embed_tokens*'", "default scheme", "rank 1 is below 2", "rank 1 is below 2", "override '*.mlp.*'", "excluded by 're:lm_head'"],
            result.Decisions.Select(d => d.Reason));
        Assert.Equal(2, result.Report.Tensors.Count);
        Assert.All(result.Report.Tensors, r => Assert.True(r.SqnrDb > 35));
        Assert.Equal(Model.Length, progress.Count);
        Assert.Equal("lm_head.weight", progress[^1].Name);
    }

    [Fact]
    public void Decide_IncludeFiltersAndExcludeWins()
    {
        RtnOptions options = new() { MinimumRank = 1 };
        options.Include.Add(new NamePattern("*.weight"));
        options.Exclude.Add(new NamePattern("*norm*"));
        RtnQuantizer quantizer = new(options);
        options.Exclude.Clear();
        Assert.Null(quantizer.Decide("a.bias", 1).Scheme);
        Assert.Null(quantizer.Decide("a.layernorm.weight", 1).Scheme);
        Assert.NotNull(quantizer.Decide("a.weight", 1).Scheme);
        Assert.True(new NamePattern("re:^a\\.\\d+$").IsMatch("a.12"));
        Assert.False(new NamePattern("a.?").IsMatch("a.12"));
        Assert.Throws<ArgumentException>(() => new NamePattern("re:("));
        Assert.Throws<ArgumentException>(() => new NamePattern(string.Empty));
    }

    [Fact]
    public void Quantize_CancelsAndNamesBadTensors()
    {
        using CancellationTokenSource cancelled = new();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => new RtnQuantizer().Quantize(Model, cancellationToken: cancelled.Token));

        float[] values = new float[16];
        values[5] = float.NaN;
        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => new RtnQuantizer().Quantize([new NamedTensor("w", values, [4, 4])]));
        Assert.Equal("w", error.TensorName);
        Assert.Equal(5, error.Index);
    }

    private static NamedTensor Tensor(string name, params int[] shape)
    {
        int count = shape.Aggregate(1, (a, b) => a * b);
        return new NamedTensor(name, Enumerable.Range(0, count).Select(i => MathF.Sin(i * 0.37f) * (1 + (i % 7))).ToArray(), shape);
    }

    /// <summary>Records reports on the calling thread (Progress&lt;T&gt; posts them asynchronously).</summary>
    private sealed class SynchronousProgress(List<RtnProgress> reports) : IProgress<RtnProgress>
    {
        public void Report(RtnProgress value) => reports.Add(value);
    }
}
