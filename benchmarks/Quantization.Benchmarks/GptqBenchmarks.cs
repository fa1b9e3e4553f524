using System.Diagnostics;

using BenchmarkDotNet.Attributes;

using MathNet.Numerics.LinearAlgebra;

namespace Quantization.Benchmarks;

/// <summary>
/// GPTQ's dense linear algebra and a whole layer. <see cref="HandWrittenInverseUpperFactor"/> (the baseline) is the
/// library's factorisation: the upper Cholesky factor U of H⁻¹ from one Cholesky factorisation and one triangular inverse.
/// <see cref="MathNetInverseUpperFactor"/> computes the same U with MathNet.Numerics the way the reference implementation
/// does (Cholesky of H, H⁻¹ from the factor, Cholesky of H⁻¹), since MathNet has no triangular inverse;
/// <see cref="HandWrittenCholesky"/> and <see cref="MathNetCholesky"/> are the factorisations alone. The Hessian is that of 1,024 Gaussian tokens with a few
/// outlier features, dampened by 0.01 × mean(diag H) as GPTQ does. <see cref="AccumulateHessian"/> and
/// <see cref="QuantizeLayer"/> are GPTQ on a K × K layer (int4, groups of 128) with those 1,024 tokens; the peak working
/// set of each benchmark process is printed at its end.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
[MemoryDiagnoser]
[WarmupCount(1)]
[IterationCount(3)]
public class GptqBenchmarks
{
    private const int Tokens = 1024;
    private float[] _tokens = [];
    private double[] _dampened = [];
    private float[] _weight = [];
    private HessianAccumulator? _hessian;

    [Params(1024, 4096)]
    public int K { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        Random random = new(42);
        _tokens = new float[Tokens * K];
        for (int i = 0; i < _tokens.Length; i++)
        {
            double u = 1 - random.NextDouble();
            double gaussian = Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * random.NextDouble());
            _tokens[i] = (float)((i % K) % 97 == 5 ? 20 * gaussian : gaussian);
        }

        _hessian = new HessianAccumulator(K);
        _hessian.Add(_tokens, [Tokens, K], "x");
        _dampened = _hessian.ToMatrix();
        double lambda = 0;
        for (int i = 0; i < K; i++)
        {
            lambda += _dampened[((long)i * K) + i];
        }

        lambda *= 0.01 / K;
        for (int i = 0; i < K; i++)
        {
            _dampened[((long)i * K) + i] += lambda;
        }

        _weight = new float[K * K];
        for (int i = 0; i < _weight.Length; i++)
        {
            _weight[i] = (float)((random.NextDouble() * 2) - 1);
        }
    }

    [GlobalCleanup]
    public void Cleanup() =>
        Console.WriteLine(FormattableString.Invariant($"// K = {K}: peak working set {Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20)} MiB"));

    [Benchmark(Baseline = true)]
    public double HandWrittenInverseUpperFactor()
    {
        double[] work = (double[])_dampened.Clone();
        double[] upper = new double[work.Length];
        if (!GptqQuantizer.TryInverseUpperFactor(work, K, upper))
        {
            throw new InvalidOperationException("The dampened Hessian is positive definite.");
        }

        return upper[^1];
    }

    [Benchmark]
    public double HandWrittenCholesky()
    {
        double[] work = (double[])_dampened.Clone();
        return GptqQuantizer.TryReversedCholesky(work, K) ? work[^1] : throw new InvalidOperationException("The dampened Hessian is positive definite.");
    }

    [Benchmark]
    public double MathNetInverseUpperFactor()
    {
        // Symmetric, so its row-major array is also the column-major one MathNet takes.
        Matrix<double> hessian = Matrix<double>.Build.Dense(K, K, (double[])_dampened.Clone());
        Matrix<double> inverse = hessian.Cholesky().Solve(Matrix<double>.Build.DenseIdentity(K));
        Matrix<double> upper = inverse.Cholesky().Factor.Transpose();
        return upper[K - 1, K - 1];
    }

    [Benchmark]
    public double MathNetCholesky()
    {
        Matrix<double> hessian = Matrix<double>.Build.Dense(K, K, (double[])_dampened.Clone());
        return hessian.Cholesky().Factor[K - 1, K - 1];
    }

    [Benchmark]
    public long AccumulateHessian()
    {
        HessianAccumulator hessian = new(K);
        hessian.Add(_tokens, [Tokens, K], "x");
        return hessian.Rows;
    }

    [Benchmark]
    public int QuantizeLayer() =>
        GptqQuantizer.Quantize(_weight, [K, K], QuantizationScheme.Int4PerGroup(128), _hessian!, name: "w").Data.Length;
}
